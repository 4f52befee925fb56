//! Rate limits per identity, behind a seam: one process keeps its buckets in memory
//! (`governor`'s GCRA, exact per key); a cluster puts a shared store behind the same
//! trait.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Decides whether `key` may act now.
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// `Ok` takes one unit of `key`'s allowance; `Err` says how long until one is free.
    fn check(&self, key: &str) -> Result<(), Duration>;
}

/// Buckets in this process's memory. A key's bucket holds the whole allowance (so a user
/// may use the hour's uploads at once) and refills evenly over the period.
pub struct LocalLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter").field("limited", &self.limiter.is_some()).finish()
    }
}

/// Keys remembered before the buckets of idle keys are dropped.
const RETAIN_ABOVE: usize = 10_000;

impl LocalLimiter {
    /// `n` per hour per key; 0 means no limit.
    pub fn per_hour(n: u32) -> Self {
        Self { limiter: NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_hour(n))), clock: DefaultClock::default() }
    }

    /// With a quota of its own (tests use short periods).
    pub fn with_quota(quota: Quota) -> Self {
        Self { limiter: Some(RateLimiter::keyed(quota)), clock: DefaultClock::default() }
    }
}

impl Limiter for LocalLimiter {
    fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if limiter.len() > RETAIN_ABOVE {
            // Full buckets say nothing a fresh bucket would not.
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_per_key_and_a_refusal_names_the_wait() {
        let limiter = LocalLimiter::per_hour(10);
        for i in 0..10 {
            assert!(limiter.check("alice").is_ok(), "upload {} of 10", i + 1);
        }
        let wait = limiter.check("alice").unwrap_err();
        // One unit comes back every six minutes.
        assert!(wait > Duration::from_secs(5 * 60) && wait <= Duration::from_secs(6 * 60), "{wait:?}");
        assert!(limiter.check("bob").is_ok(), "another user has an allowance of their own");
        assert!(LocalLimiter::per_hour(0).check("alice").is_ok(), "0 means no limit");
    }
}
