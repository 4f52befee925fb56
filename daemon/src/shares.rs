//! Each user's share of the server: how many requests all their sessions together may have
//! in flight. One session is bounded by its own allowance; this bounds a user with many
//! sessions (devices, tabs behind the bridge), so that no one user can fill a shard's
//! mailbox or commit queue for everyone else on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Semaphore;

/// The users' in-flight allowances, shared by their sessions and dropped with the last.
#[derive(Debug)]
pub struct UserShares {
    per_user: usize,
    shares: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl UserShares {
    /// Allowances of `per_user` requests in flight.
    pub fn new(per_user: usize) -> Self {
        Self { per_user, shares: Mutex::new(HashMap::new()) }
    }

    /// The most requests one user's sessions may have in flight together.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    /// `user`'s allowance, the same for all their sessions while any lives.
    pub fn of(&self, user: &str) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = shares.get(user).and_then(Weak::upgrade) {
            return share;
        }
        // Forget the users whose sessions have all ended, now and then.
        if shares.len() >= 1_024 && shares.len().is_power_of_two() {
            shares.retain(|_, w| w.strong_count() > 0);
        }
        let share = Arc::new(Semaphore::new(self.per_user));
        shares.insert(user.to_owned(), Arc::downgrade(&share));
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_sessions_share_one_allowance() {
        let shares = UserShares::new(3);
        let phone = shares.of("alice");
        let laptop = shares.of("alice");
        assert!(Arc::ptr_eq(&phone, &laptop), "the same allowance for every session of a user");
        let held: Vec<_> = (0..3).map(|_| phone.clone().try_acquire_owned().unwrap()).collect();
        assert!(laptop.try_acquire().is_err(), "what one session holds, the others cannot take");
        assert!(shares.of("bob").try_acquire().is_ok(), "another user has their own");
        drop(held);
        assert!(laptop.try_acquire().is_ok());
        drop((phone, laptop));
        assert_eq!(shares.of("alice").available_permits(), 3, "a fresh allowance once every session ended");
    }
}
