//! Store reads that no shard owns, run off the async runtime with a bound.
//!
//! Some reads belong to no conversation: a user's membership index (listing, catch-up,
//! presence), their directory entry, their push subscriptions. RocksDB reads block, and a
//! blocked runtime worker stalls every session it carries, so these reads run on Tokio's
//! blocking threads — but never without limit:
//!
//! ```text
//!  request ──try_acquire──► admitted (running + waiting ≤ RUNNING + WAITING)
//!                │ full                      │ acquire (waits its turn)
//!                ▼                           ▼
//!           OVERLOADED              spawn_blocking(read)   at most RUNNING at once
//! ```
//!
//! A client's read beyond the bound is refused at once ([`PoolError::Full`], answered
//! `OVERLOADED`; the client may retry) instead of queueing without limit. The server's own
//! reads that follow a session's start or end (its presence announcement, its last-seen
//! record) have nobody to retry them: they wait their turn for a running slot instead
//! ([`StoragePool::read_in_turn`]), outside the admission bound, so that a thousand
//! sessions ending at once (a gateway restarting, a network cut) are all announced and
//! recorded, and clients' reads are still admitted beside them. At most one such read waits
//! per kind and user (`requests::Queued`), so their queue is bounded by the users. The
//! pool only reads: writes go through the shards (`shard::Command::Commit`), whose group
//! commit is what makes them durable.

use std::sync::Arc;

use tokio::sync::Semaphore;

use legalchat_protocol::pb::ErrorCode;

use crate::policy::RequestError;
use crate::store::Store;

/// Reads running at once. A store read is a point lookup or a short prefix scan; a few
/// threads keep the disk busy without starving the shards' own reads of IO.
pub const RUNNING: usize = 16;

/// Reads admitted to wait for a running slot. Enough for a reconnect storm of a thousand
/// users to queue its presence reads; beyond it the caller hears OVERLOADED.
pub const WAITING: usize = 1_024;

/// Why a read did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Running and waiting reads are at their bound.
    #[error("the server is busy reading storage; retry shortly")]
    Full,
    /// The read panicked, or the runtime is shutting down.
    #[error("a storage read did not complete")]
    Failed,
}

impl From<PoolError> for RequestError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Full => RequestError::new(ErrorCode::Overloaded, e.to_string()),
            PoolError::Failed => RequestError::internal(e.to_string()),
        }
    }
}

/// A bounded pool of blocking store reads.
#[derive(Debug, Clone)]
pub struct StoragePool {
    store: Arc<dyn Store>,
    /// Reads admitted (running or waiting).
    admitted: Arc<Semaphore>,
    /// Reads running.
    running: Arc<Semaphore>,
}

impl StoragePool {
    /// A pool over `store` running at most `running` reads with at most `waiting` more
    /// admitted behind them.
    pub fn new(store: Arc<dyn Store>, running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        Self { store, admitted: Arc::new(Semaphore::new(running + waiting)), running: Arc::new(Semaphore::new(running)) }
    }

    /// Runs `read` on a blocking thread once a slot is free, or refuses at once when the
    /// pool is full. `read` returns its own result (usually a `Result` of the store's).
    pub async fn read<T, F>(&self, read: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> T + Send + 'static,
    {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            metrics::counter!("legalchat_storage_reads_refused_total").increment(1);
            return Err(PoolError::Full);
        };
        self.run(read, Some(admitted)).await
    }

    /// Runs `read` on a blocking thread once a slot is free, however long the queue: for
    /// the server's own reads, which nobody would retry (see the module's docs). FIFO with
    /// the admitted reads; never [`PoolError::Full`].
    pub async fn read_in_turn<T, F>(&self, read: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> T + Send + 'static,
    {
        self.run(read, None).await
    }

    async fn run<T, F>(&self, read: F, admitted: Option<tokio::sync::OwnedSemaphorePermit>) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> T + Send + 'static,
    {
        let running = self.running.clone().acquire_owned().await.map_err(|_| PoolError::Failed)?;
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = read(&*store);
            drop(running);
            drop(admitted);
            r
        })
        .await;
        result.map_err(|_| PoolError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RocksStore;

    /// A pool of one running slot and one waiting place, with one read running until the
    /// returned sender is used: admitted (`read`, counted against the bound) or in turn.
    async fn pool_with_a_held_read(
        dir: &tempfile::TempDir,
        admitted: bool,
    ) -> (StoragePool, tokio::task::JoinHandle<Result<(), PoolError>>, std::sync::mpsc::Sender<()>) {
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let pool = StoragePool::new(store, 1, 1);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let hold = move |_: &dyn Store| {
            let _ = started_tx.send(());
            release_rx.recv().ok();
        };
        let running = tokio::spawn({
            let pool = pool.clone();
            async move { if admitted { pool.read(hold).await } else { pool.read_in_turn(hold).await } }
        });
        started_rx.await.unwrap();
        (pool, running, release_tx)
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_and_frees_its_slots() {
        let dir = tempfile::tempdir().unwrap();
        // One read runs (held until released), one waits behind it.
        let (pool, running, release) = pool_with_a_held_read(&dir, true).await;
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.read(|s| s.user("nobody").map(|u| u.is_none())).await }
        });
        tokio::task::yield_now().await;
        while pool.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // The third is refused without waiting, with an answer the caller can pass on.
        let refused = pool.read(|_| ()).await.unwrap_err();
        assert_eq!(refused, PoolError::Full);
        assert_eq!(RequestError::from(refused).code, ErrorCode::Overloaded);

        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert!(waiting.await.unwrap().unwrap().unwrap(), "the waiting read ran once a slot was free");
        assert_eq!(pool.read(|_| 2).await, Ok(2), "every slot is back");
    }

    #[tokio::test]
    async fn the_servers_own_reads_wait_their_turn_beyond_the_bound_and_leave_room_for_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, running, release) = pool_with_a_held_read(&dir, false).await;
        // Far more than the bound wait behind the running one, none refused.
        let queued: Vec<_> = (0..50u32)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.read_in_turn(move |_| i).await })
            })
            .collect();
        while pool.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // A client's read is still admitted beside them (it waits its turn, not refused).
        let client = tokio::spawn({
            let pool = pool.clone();
            async move { pool.read(|_| "client").await }
        });
        while pool.admitted.available_permits() == 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        running.await.unwrap().unwrap();
        for (i, read) in queued.into_iter().enumerate() {
            assert_eq!(read.await.unwrap(), Ok(u32::try_from(i).unwrap()));
        }
        assert_eq!(client.await.unwrap(), Ok("client"));
        assert_eq!((pool.running.available_permits(), pool.admitted.available_permits()), (1, 2), "every slot is back");
    }
}
