//! How long to wait before the next attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::range;

/// Exponential backoff with jitter.
///
/// Attempt `n` (1-based) that failed in a retryable way waits a random time between half and
/// all of `min(max_delay, base_delay * 2^(n-1))`: the random half spreads retries of many
/// messages that failed together, the fixed half keeps the wait growing. A provider's own
/// `Retry-After` replaces the computed wait, capped by `max_delay`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per message and recipient, the first one included, in each retry from the
    /// gateway's retry queue (and in every send of a gateway without one). The first send of
    /// a gateway with a queue makes one attempt, so its caller is not held for the rest. The
    /// queue retries later again, so this stays small.
    #[serde(deserialize_with = "range::read_max_attempts")]
    pub max_attempts: u32,
    #[serde(
        serialize_with = "millis::serialize",
        deserialize_with = "range::read_base_delay"
    )]
    pub base_delay: Duration,
    #[serde(
        serialize_with = "millis::serialize",
        deserialize_with = "range::read_max_delay"
    )]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based). `unit` is a random number in
    /// `[0, 1)`; `retry_after` is the provider's own hint.
    pub fn delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        if let Some(hint) = retry_after {
            return hint.min(self.max_delay);
        }

        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A random number in `[0, 1)` for jitter, from the operating system's generator.
pub(crate) fn jitter_unit() -> f64 {
    use ring::rand::SecureRandom;

    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Durations in config files are written as whole milliseconds; each is read in its own
/// range (see [`range`]).
pub(crate) mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::range::millis_of(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1_000),
        };
        assert_eq!(policy.delay(1, 0.0, None), Duration::from_millis(50));
        assert_eq!(policy.delay(2, 0.0, None), Duration::from_millis(100));
        assert_eq!(policy.delay(3, 0.999, None).as_millis(), 399);
        assert_eq!(policy.delay(9, 1.0, None), Duration::from_millis(1_000));
        assert_eq!(policy.delay(40, 0.0, None), Duration::from_millis(500));
        let hint = Some(Duration::from_secs(60));
        assert_eq!(policy.delay(1, 0.3, hint), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..100 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
