//! The bounded queue between a link's senders and its writer task.
//!
//! It does what a bounded `tokio::sync::mpsc` channel does for this one use, without the
//! channel's block of 32 slots allocated up front (about 1 KiB): a gateway holds one queue
//! per session, and almost all of them are empty almost all the time. Items wait in a
//! `VecDeque` that grows when they come and gives a large buffer back once drained.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A drained queue keeps a buffer of at most this many items.
const KEPT_CAPACITY: usize = 8;

struct State<T> {
    items: VecDeque<T>,
    /// Live [`Sender`]s; at 0 the receiver ends after the last item.
    senders: usize,
    /// The [`Receiver`] is gone: sends fail.
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    bound: usize,
    /// An item came, or the last sender left.
    readable: Notify,
    /// An item was taken, or the receiver left.
    writable: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue of at most `bound` items (at least one).
pub(crate) fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), senders: 1, receiver_gone: false }),
        bound: bound.max(1),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (Sender { shared: Arc::clone(&shared) }, Receiver { shared })
}

/// Queues items.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("bound", &self.shared.bound).finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full; `Err` with the item once the
    /// receiver is gone.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        loop {
            let room = self.shared.writable.notified();
            tokio::pin!(room);
            // Registered before the check: an item taken after it wakes this send.
            room.as_mut().enable();
            {
                let mut s = self.shared.lock();
                if s.receiver_gone {
                    return Err(item);
                }
                if s.items.len() < self.shared.bound {
                    s.items.push_back(item);
                    drop(s);
                    self.shared.readable.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }
}

/// Takes items, for the writer task.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("bound", &self.shared.bound).finish_non_exhaustive()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut s = self.shared.lock();
            s.receiver_gone = true;
            std::mem::take(&mut s.items)
        };
        // Items are dropped outside the lock; every waiting send fails.
        drop(dropped);
        self.shared.writable.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once every sender is gone and the queue is
    /// empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut s = self.shared.lock();
                if let Some(item) = s.items.pop_front() {
                    if s.items.is_empty() && s.items.capacity() > KEPT_CAPACITY {
                        s.items = VecDeque::new();
                    }
                    drop(s);
                    self.shared.writable.notify_one();
                    return Some(item);
                }
                if s.senders == 0 {
                    return None;
                }
            }
            // An item queued after the check above left a permit: this returns at once.
            self.shared.readable.notified().await;
        }
    }

    /// Items waiting, and the buffer's capacity.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let s = self.shared.lock();
        (s.items.len(), s.items.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_the_end_follows_the_last_sender() {
        let (tx, mut rx) = bounded(4);
        let other = tx.clone();
        tx.send(1).await.unwrap();
        other.send(2).await.unwrap();
        drop(tx);
        other.send(3).await.unwrap();
        drop(other);
        assert_eq!((rx.recv().await, rx.recv().await, rx.recv().await, rx.recv().await), (Some(1), Some(2), Some(3), None));
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_send_until_an_item_is_taken() {
        let (tx, mut rx) = bounded(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = Arc::clone(&tx);
            async move { tx.send(3).await }
        });
        // The third send cannot finish while the queue holds two.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.sizes().0, 2);
        assert_eq!(rx.recv().await, Some(1));
        waiting.await.unwrap().unwrap();
        assert_eq!((rx.recv().await, rx.recv().await), (Some(2), Some(3)));
    }

    #[tokio::test]
    async fn a_gone_receiver_fails_sends_and_frees_waiting_ones() {
        let (tx, rx) = bounded(1);
        tx.send(1).await.unwrap();
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = Arc::clone(&tx);
            async move { tx.send(2).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.unwrap(), Err(2));
        assert_eq!(tx.send(3).await, Err(3));
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_large_buffer() {
        let (tx, mut rx) = bounded(256);
        assert_eq!(rx.sizes(), (0, 0), "nothing allocated up front");
        for i in 0..100 {
            tx.send(i).await.unwrap();
        }
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.sizes(), (0, 0), "a drained queue gives its buffer back");
    }
}
