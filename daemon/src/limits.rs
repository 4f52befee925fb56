//! Rate limits per identity, behind a seam: one process keeps its buckets in memory
//! (`governor`'s GCRA, exact per key); a cluster puts a shared store (Redis) behind the
//! same trait.
//!
//! | limit | key | default | where |
//! |---|---|---|---|
//! | messages | user (all devices, QUIC and bridge alike) | 100 per minute | sessions, before a send reaches its shard |
//! | uploads | user | 10 per hour | `StartUpload` |
//! | new connections | client IP address | 5 per minute, bursts of 20; trusted networks exempt | the QUIC accept loop; the bridge for browsers |
//!
//! A refusal says how long to wait; nothing already accepted is affected.

use std::net::IpAddr;

pub use legalchat_protocol::net::Networks;
use std::num::NonZeroU32;
use std::sync::Arc;
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

    /// `n` per minute per key, in bursts of up to `burst` (at least `n`); 0 means no limit.
    pub fn per_minute(n: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(n).map(|n| Quota::per_minute(n).allow_burst(NonZeroU32::new(burst).unwrap_or(n).max(n)));
        Self { limiter: quota.map(RateLimiter::keyed), clock: DefaultClock::default() }
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

/// Rate limit settings (`[limits]`).
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Messages per user per minute (0: no limit).
    pub messages_per_minute: u32,
    /// New connections (QUIC, or sessions over TCP) per client address per minute (0: no
    /// limit).
    pub connections_per_minute: u32,
    /// How many new connections one address may open at once before the per-minute rate
    /// applies (an office behind one public address).
    pub connection_burst: u32,
    /// Addresses never limited per address (loopback by default: a bridge or proxy on
    /// the same host speaks for many users).
    pub trusted_networks: Networks,
    /// New uploads per user per hour (0: no limit); the setting is
    /// `attachments.uploads_per_hour`.
    pub uploads_per_hour: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            messages_per_minute: 100,
            connections_per_minute: 5,
            connection_burst: 20,
            trusted_networks: Networks::loopback(),
            uploads_per_hour: 10,
        }
    }
}

/// The limits sessions and the accept loop apply.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Messages, by user.
    pub messages: Arc<dyn Limiter>,
    /// New connections, by address.
    pub connections: Arc<dyn Limiter>,
    /// New uploads, by user.
    pub uploads: Arc<dyn Limiter>,
    trusted: Networks,
    /// The settings, for error messages.
    pub config: LimitsConfig,
}

impl RateLimits {
    /// In-process buckets for `config`.
    pub fn local(config: LimitsConfig) -> Self {
        Self {
            messages: Arc::new(LocalLimiter::per_minute(config.messages_per_minute, config.messages_per_minute)),
            connections: Arc::new(LocalLimiter::per_minute(config.connections_per_minute, config.connection_burst)),
            uploads: Arc::new(LocalLimiter::per_hour(config.uploads_per_hour)),
            trusted: config.trusted_networks.clone(),
            config,
        }
    }

    /// May `ip` open a new connection now?
    pub fn check_connection(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.trusted.contains(ip) {
            return Ok(());
        }
        self.connections.check(&ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_limited_per_address_after_the_burst_and_trusted_networks_never() {
        let config = LimitsConfig { connections_per_minute: 5, connection_burst: 7, ..LimitsConfig::default() };
        let limits = RateLimits::local(config);
        let office: IpAddr = "198.51.100.4".parse().unwrap();
        for n in 0..7 {
            assert!(limits.check_connection(office).is_ok(), "connection {} of the burst", n + 1);
        }
        let wait = limits.check_connection(office).unwrap_err();
        assert!(wait <= Duration::from_secs(12) && wait > Duration::from_secs(10), "one more every 12 s: {wait:?}");
        assert!(limits.check_connection("198.51.100.5".parse().unwrap()).is_ok(), "another address");
        for _ in 0..100 {
            assert!(limits.check_connection("127.0.0.1".parse().unwrap()).is_ok(), "loopback is trusted by default");
        }
    }

    #[test]
    fn messages_are_exact_at_the_boundary() {
        let limits = RateLimits::local(LimitsConfig::default());
        for n in 0..100 {
            assert!(limits.messages.check("alice").is_ok(), "message {}", n + 1);
        }
        let wait = limits.messages.check("alice").unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_millis(600), "one more every 0.6 s: {wait:?}");
    }

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
