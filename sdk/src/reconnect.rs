//! When to try again after the connection dropped: exponential backoff with jitter, as a
//! pure function of the attempt number and a random draw, so that the schedule is tested
//! without a clock or a random number generator.

use std::time::Duration;

use legalchat_protocol::validate::ValidationError;

/// Default delay before the first reconnect attempt (before jitter).
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(200);
/// Default cap on the delay between attempts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default growth factor of the delay from one attempt to the next.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;

/// How the random part of a reconnect delay is drawn.
///
/// Jitter keeps a crowd of clients that lost the server at the same moment (a restart, a
/// network blip at the office) from coming back in lockstep and knocking it over again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the computed delay. For tests and tools; a fleet of apps should not use it.
    None,
    /// "Full jitter": uniformly random between zero and the computed delay. Spreads
    /// reconnecting clients the most; the default.
    #[default]
    Full,
    /// Uniformly random between 50 % and 150 % of the computed delay (±50 %), but never
    /// above [`ReconnectPolicy::max_delay`]. Keeps a minimum pause between attempts.
    Half,
}

/// When and how often the client reconnects after its connection dropped.
///
/// Attempt `n` (from 1) waits `min(max_delay, initial_delay × multiplier^(n-1))`, jittered
/// as [`jitter`](Self::jitter) says, then connects. The attempt counter starts over once a
/// reconnect has succeeded and caught up.
///
/// ```
/// # use std::time::Duration;
/// # use legalchat_sdk::{Jitter, ReconnectPolicy};
/// let policy = ReconnectPolicy::default().with_jitter(Jitter::None);
/// assert_eq!(policy.delay(1, || 0.5), Duration::from_millis(200));
/// assert_eq!(policy.delay(4, || 0.5), Duration::from_millis(1_600));
/// assert_eq!(policy.delay(20, || 0.5), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first attempt, before jitter (default 200 ms).
    pub initial_delay: Duration,
    /// The cap: no delay is longer than this (default 30 s).
    pub max_delay: Duration,
    /// Growth of the delay per attempt, at least 1 (default 2.0).
    pub multiplier: f64,
    /// How the delay is randomised (default [`Jitter::Full`]).
    pub jitter: Jitter,
    /// Attempts before giving up and ending the client with
    /// [`Event::Closed`](crate::Event::Closed); `None` (the default) tries forever and
    /// `Some(0)` never reconnects.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            multiplier: DEFAULT_MULTIPLIER,
            jitter: Jitter::Full,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// A policy that never reconnects: when the connection drops, the client ends with
    /// [`Event::Closed`](crate::Event::Closed), as clients of earlier versions did.
    pub fn never() -> Self {
        Self { max_attempts: Some(0), ..Self::default() }
    }

    /// Sets the delay before the first attempt.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets the cap on the delay.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets the growth factor per attempt.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets how delays are randomised.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the attempts before giving up (`None`: never give up).
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Whether attempt number `attempt` (from 1) may be made.
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }

    /// The delay before attempt `attempt` (from 1) without jitter:
    /// `min(max_delay, initial_delay × multiplier^(attempt-1))`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        // Infinity and NaN (a huge exponent) end up at the cap, like every large value.
        let capped = if secs.is_finite() { secs.min(self.max_delay.as_secs_f64()) } else { self.max_delay.as_secs_f64() };
        Duration::try_from_secs_f64(capped).unwrap_or(self.max_delay).min(self.max_delay)
    }

    /// The delay before attempt `attempt` (from 1), jittered with `random`, which must
    /// return a number in `[0, 1)` (values outside are clamped into it). It is called at
    /// most once.
    pub fn delay(&self, attempt: u32, random: impl FnOnce() -> f64) -> Duration {
        let base = self.base_delay(attempt);
        let factor = match self.jitter {
            Jitter::None => return base,
            Jitter::Full => unit(random()),
            Jitter::Half => 0.5 + unit(random()),
        };
        base.mul_f64(factor).min(self.max_delay)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ValidationError::new("reconnect.multiplier", format!("is {}; it must be a finite number >= 1", self.multiplier)));
        }
        if self.max_delay.is_zero() {
            return Err(ValidationError::new("reconnect.max_delay", "must be greater than zero"));
        }
        if self.initial_delay > self.max_delay {
            return Err(ValidationError::new(
                "reconnect.initial_delay",
                format!("is {:?}, more than reconnect.max_delay ({:?})", self.initial_delay, self.max_delay),
            ));
        }
        Ok(())
    }
}

/// Clamps a random draw into `[0, 1]`; NaN counts as 0.
fn unit(r: f64) -> f64 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> ReconnectPolicy {
        ReconnectPolicy { jitter, ..ReconnectPolicy::default() }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = policy(Jitter::None);
        let ms: Vec<u128> = (1..=10).map(|n| p.delay(n, || unreachable!("no jitter, no draw")).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000]);
    }

    #[test]
    fn absurd_attempt_numbers_stay_at_the_cap() {
        let p = policy(Jitter::None);
        assert_eq!(p.base_delay(u32::MAX), DEFAULT_MAX_DELAY);
        assert_eq!(p.base_delay(0), DEFAULT_INITIAL_DELAY, "attempt 0 is treated as the first");
        let huge = ReconnectPolicy { multiplier: 1e300, ..p };
        assert_eq!(huge.base_delay(5), DEFAULT_MAX_DELAY);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_base() {
        let p = policy(Jitter::Full);
        assert_eq!(p.delay(3, || 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, || 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(3, || 0.999_999).as_millis(), 799);
        assert_eq!(p.delay(20, || 0.5), Duration::from_secs(15));
    }

    #[test]
    fn half_jitter_spans_half_to_one_and_a_half_but_respects_the_cap() {
        let p = policy(Jitter::Half);
        assert_eq!(p.delay(1, || 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(1, || 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(1, || 1.0), Duration::from_millis(300));
        assert_eq!(p.delay(30, || 1.0), DEFAULT_MAX_DELAY, "never above the cap");
    }

    #[test]
    fn bad_random_draws_are_clamped() {
        let p = policy(Jitter::Full);
        assert_eq!(p.delay(1, || -3.0), Duration::ZERO);
        assert_eq!(p.delay(1, || f64::NAN), Duration::ZERO);
        assert_eq!(p.delay(1, || 7.0), Duration::from_millis(200));
    }

    #[test]
    fn attempts_are_limited_only_when_asked() {
        assert!(ReconnectPolicy::default().allows(1_000_000));
        let three = ReconnectPolicy { max_attempts: Some(3), ..ReconnectPolicy::default() };
        assert!(three.allows(3));
        assert!(!three.allows(4));
        assert!(!ReconnectPolicy::never().allows(1));
    }

    #[test]
    fn validation_names_the_setting() {
        assert_eq!(ReconnectPolicy::default().validate(), Ok(()));
        let shrinking = ReconnectPolicy { multiplier: 0.5, ..ReconnectPolicy::default() };
        assert_eq!(shrinking.validate().unwrap_err().field, "reconnect.multiplier");
        let nan = ReconnectPolicy { multiplier: f64::NAN, ..ReconnectPolicy::default() };
        assert_eq!(nan.validate().unwrap_err().field, "reconnect.multiplier");
        let inverted = ReconnectPolicy { initial_delay: Duration::from_secs(60), ..ReconnectPolicy::default() };
        assert_eq!(inverted.validate().unwrap_err().field, "reconnect.initial_delay");
        let zero = ReconnectPolicy { initial_delay: Duration::ZERO, max_delay: Duration::ZERO, ..ReconnectPolicy::default() };
        assert_eq!(zero.validate().unwrap_err().field, "reconnect.max_delay");
    }
}
