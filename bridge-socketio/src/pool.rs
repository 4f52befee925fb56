//! Which QUIC connection a socket's daemon session rides on.
//!
//! ```text
//!  socket ──lease()──► daemon (round robin) ──► first connection with a free place
//!                                               (or a new one) ──► SharedConnection
//!  Lease dropped (socket gone) ──► the place is free again
//! ```
//!
//! Sessions are multiplexed: up to `sessions_per_connection` browser sockets share one
//! connection, each on a stream of its own, so that ten thousand browsers cost a handful
//! of QUIC connections and one UDP socket. A connection that drops is replaced by the SDK
//! (every client on it reconnects through one new connection); the pool only counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use legalchat_sdk::{ClientEndpoint, SharedConnection};

/// The daemons a bridge speaks for and the connections to them.
#[derive(Debug)]
pub struct DaemonPool {
    daemons: Vec<Daemon>,
    next: AtomicUsize,
    per_connection: usize,
}

#[derive(Debug)]
struct Daemon {
    addr: SocketAddr,
    endpoint: ClientEndpoint,
    connections: Mutex<Vec<Place>>,
}

#[derive(Debug, Clone)]
struct Place {
    connection: SharedConnection,
    sessions: Arc<AtomicUsize>,
}

/// A socket's place on a connection; dropping it frees the place.
#[derive(Debug)]
pub struct Lease {
    /// The daemon.
    pub addr: SocketAddr,
    /// The connection to carry the session.
    pub connection: SharedConnection,
    sessions: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DaemonPool {
    /// A pool over `daemons` (at least one; [`BridgeConfig::validate`](crate::BridgeConfig::validate)
    /// checks), all reached through `endpoint`.
    pub fn new(daemons: &[SocketAddr], endpoint: &ClientEndpoint, per_connection: usize) -> Self {
        let daemons =
            daemons.iter().map(|&addr| Daemon { addr, endpoint: endpoint.clone(), connections: Mutex::new(Vec::new()) }).collect();
        Self { daemons, next: AtomicUsize::new(0), per_connection: per_connection.max(1) }
    }

    /// A place for one more session: the daemons take turns, and on a daemon the first
    /// connection with room takes it (a new connection when all are full).
    pub fn lease(&self) -> Lease {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.daemons.len();
        let daemon = &self.daemons[i];
        let mut connections = daemon.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let place = match connections.iter().find(|p| p.sessions.load(Ordering::Acquire) < self.per_connection) {
            Some(place) => place.clone(),
            None => {
                let place = Place { connection: SharedConnection::new(daemon.endpoint.clone()), sessions: Arc::default() };
                connections.push(place.clone());
                place
            }
        };
        place.sessions.fetch_add(1, Ordering::AcqRel);
        Lease { addr: daemon.addr, connection: place.connection, sessions: place.sessions }
    }

    /// Sessions currently leased, per connection, per daemon (for `/healthz` and tests).
    pub fn sessions(&self) -> Vec<(SocketAddr, Vec<usize>)> {
        self.daemons
            .iter()
            .map(|d| {
                let connections = d.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                (d.addr, connections.iter().map(|p| p.sessions.load(Ordering::Acquire)).collect())
            })
            .collect()
    }

    /// Closes every connection (on shutdown).
    pub fn close(&self) {
        for d in &self.daemons {
            for p in d.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
                p.connection.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(daemons: usize, per_connection: usize) -> DaemonPool {
        let addrs: Vec<SocketAddr> = (0..daemons).map(|i| SocketAddr::from(([127, 0, 0, 1], 7443 + u16::try_from(i).unwrap()))).collect();
        DaemonPool::new(&addrs, &ClientEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(), per_connection)
    }

    #[tokio::test]
    async fn sessions_fill_a_connection_before_the_next_is_opened() {
        let pool = pool(1, 2);
        let a = pool.lease();
        let b = pool.lease();
        let c = pool.lease();
        assert_eq!(pool.sessions()[0].1, [2, 1]);
        drop(a);
        assert_eq!(pool.sessions()[0].1, [1, 1]);
        // The freed place is taken before the second connection's.
        let _d = pool.lease();
        assert_eq!(pool.sessions()[0].1, [2, 1]);
        drop((b, c));
    }

    #[tokio::test]
    async fn daemons_take_turns() {
        let pool = pool(2, 10);
        let leases: Vec<Lease> = (0..4).map(|_| pool.lease()).collect();
        let ports: Vec<u16> = leases.iter().map(|l| l.addr.port()).collect();
        assert_eq!(ports, [7443, 7444, 7443, 7444]);
        assert_eq!(pool.sessions().iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(), [vec![2], vec![2]]);
    }
}
