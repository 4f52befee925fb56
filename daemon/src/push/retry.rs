//! What to do after each delivery attempt: a pure function of the attempt's outcome, so
//! the whole policy is tested without a clock or a network.
//!
//! | outcome                                   | Web Push                 | webhook   |
//! |-------------------------------------------|--------------------------|-----------|
//! | 2xx                                       | done                     | done      |
//! | 404, 410 (RFC 8030 §7.3: subscription gone)| remove the subscription | give up   |
//! | network error, timeout, 408, 429, 5xx     | retry with backoff       | retry     |
//! | any other status                          | give up                  | give up   |
//!
//! Backoff is exponential from [`BASE_DELAY`] up to [`MAX_DELAY`] with "equal jitter" (a
//! random point in the upper half of the step), so retries from many deliveries spread out
//! while each still waits at least half its step. A `Retry-After` in seconds replaces the
//! computed delay, up to [`MAX_RETRY_AFTER`].

use std::time::Duration;

/// First retry step.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// Largest computed step.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Which channel a delivery goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A Web Push subscription.
    WebPush,
    /// The firm's webhook.
    Webhook,
}

impl Channel {
    /// The `kind` label of the push metrics.
    pub fn label(self) -> &'static str {
        match self {
            Channel::WebPush => "webpush",
            Channel::Webhook => "webhook",
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with `status` (and `Retry-After`, when it gave one in seconds).
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    Network,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered.
    Done,
    /// The push service says the subscription no longer exists: delete it, do not retry.
    RemoveSubscription,
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop; the label says why (`legalchat_push_failed_total{reason}`).
    GiveUp(&'static str),
}

/// The decision after attempt number `attempt` (1-based) of at most `max_attempts` ended
/// with `outcome`. `jitter` is a random number in `[0, 1)`.
pub fn next(channel: Channel, attempt: u32, max_attempts: u32, outcome: Outcome, jitter: f64) -> Next {
    let retry_after = match outcome {
        Outcome::Status { status: 200..=299, .. } => return Next::Done,
        Outcome::Status { status: 404 | 410, .. } if channel == Channel::WebPush => return Next::RemoveSubscription,
        Outcome::Status { status: 408 | 429 | 500..=599, retry_after } => retry_after,
        Outcome::Network => None,
        Outcome::Status { .. } => return Next::GiveUp("rejected"),
    };
    if attempt >= max_attempts {
        return Next::GiveUp("exhausted");
    }
    Next::RetryAfter(match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER),
        None => backoff(attempt, jitter),
    })
}

/// The wait after failed attempt number `attempt` (1-based): a step of
/// `BASE_DELAY · 2^(attempt-1)`, capped at [`MAX_DELAY`], of which the upper half is
/// chosen by `jitter` in `[0, 1)`.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let step = BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    step / 2 + (step / 2).mul_f64(jitter)
}

/// Parses a `Retry-After` header given in seconds. The HTTP-date form is not used by push
/// services for this and is ignored (the computed backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Outcome {
        Outcome::Status { status, retry_after: None }
    }

    #[test]
    fn success_removal_and_rejection() {
        for ch in [Channel::WebPush, Channel::Webhook] {
            assert_eq!(next(ch, 1, 5, status(201), 0.5), Next::Done);
            assert_eq!(next(ch, 5, 5, status(200), 0.5), Next::Done);
            for code in [400, 401, 403, 413, 301] {
                assert_eq!(next(ch, 1, 5, status(code), 0.5), Next::GiveUp("rejected"), "{code}");
            }
        }
        for code in [404, 410] {
            assert_eq!(next(Channel::WebPush, 1, 5, status(code), 0.5), Next::RemoveSubscription);
            // The firm's service answering 404 is a misconfiguration, not a gone subscription.
            assert_eq!(next(Channel::Webhook, 1, 5, status(code), 0.5), Next::GiveUp("rejected"));
        }
    }

    #[test]
    fn transient_failures_retry_until_the_last_attempt() {
        for outcome in [Outcome::Network, status(408), status(429), status(500), status(503)] {
            assert!(matches!(next(Channel::WebPush, 1, 5, outcome, 0.0), Next::RetryAfter(_)), "{outcome:?}");
            assert!(matches!(next(Channel::Webhook, 4, 5, outcome, 0.0), Next::RetryAfter(_)), "{outcome:?}");
            assert_eq!(next(Channel::Webhook, 5, 5, outcome, 0.0), Next::GiveUp("exhausted"));
            assert_eq!(next(Channel::WebPush, 1, 1, outcome, 0.0), Next::GiveUp("exhausted"));
        }
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let asked = |secs| Outcome::Status { status: 429, retry_after: Some(Duration::from_secs(secs)) };
        assert_eq!(next(Channel::WebPush, 1, 5, asked(7), 0.9), Next::RetryAfter(Duration::from_secs(7)));
        assert_eq!(next(Channel::WebPush, 1, 5, asked(0), 0.9), Next::RetryAfter(Duration::ZERO));
        assert_eq!(next(Channel::WebPush, 1, 5, asked(86_400), 0.9), Next::RetryAfter(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn backoff_schedule() {
        let ms = |attempt, jitter| backoff(attempt, jitter).as_millis();
        // Lower edge of each step (jitter 0) and upper edge (jitter → 1).
        let low: Vec<u128> = (1..=10).map(|a| ms(a, 0.0)).collect();
        assert_eq!(low, [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        let high: Vec<u128> = (1..=10).map(|a| ms(a, 1.0)).collect();
        assert_eq!(high, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
        assert_eq!(ms(3, 0.5), 1_500);
        // Absurd inputs stay in range.
        assert_eq!(ms(0, 0.0), 250);
        assert_eq!(ms(u32::MAX, 0.0), 30_000);
        assert_eq!(ms(2, f64::NAN), 500);
        assert_eq!(ms(2, 7.0), 1_000);
        // Five attempts (four waits) at most take 0.5 + 1 + 2 + 4 = 7.5 s by default.
        let total: Duration = (1..5).map(|a| backoff(a, 1.0)).sum();
        assert_eq!(total, Duration::from_millis(7_500));
    }
}
