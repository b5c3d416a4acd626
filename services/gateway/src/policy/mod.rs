//! What every adapter shares around a provider call: retries with backoff, a rate limit and a
//! circuit breaker, configured per provider.

mod breaker;
mod limit;
pub mod range;
mod retry;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use limit::{RateLimit, RateLimiter};
pub use retry::RetryPolicy;
pub(crate) use retry::jitter_unit as retry_jitter;

use serde::{Deserialize, Serialize};

/// The delivery policy of one provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryPolicy {
    pub retry: RetryPolicy,
    pub rate_limit: RateLimit,
    pub breaker: BreakerConfig,
}

impl DeliveryPolicy {
    /// The settings [`DeliveryPolicy::check`] refuses for what another one holds, as
    /// `(refused, compared with)`, so an error can point at both.
    pub const COMPARED: &[(&str, &str)] = &[("retry.max_delay", "retry.base_delay")];

    /// Checks every setting against its range; on the first one outside it, its path below
    /// the policy (`retry.max_attempts`) and why. Reading a file checks the same as it goes;
    /// this covers a policy built in code, and the settings that depend on each other.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let r = &self.retry;
        let whole = [
            (
                "retry.max_attempts",
                range::MAX_ATTEMPTS,
                u64::from(r.max_attempts),
            ),
            (
                "retry.base_delay",
                range::BASE_DELAY_MS,
                range::millis_of(r.base_delay),
            ),
            (
                "retry.max_delay",
                range::MAX_DELAY_MS,
                range::millis_of(r.max_delay),
            ),
            (
                "rate_limit.burst",
                range::BURST,
                u64::from(self.rate_limit.burst),
            ),
            (
                "breaker.failure_threshold",
                range::FAILURE_THRESHOLD,
                u64::from(self.breaker.failure_threshold),
            ),
            (
                "breaker.cool_down",
                range::COOL_DOWN_MS,
                range::millis_of(self.breaker.cool_down),
            ),
        ];
        for (field, bounds, value) in whole {
            bounds.check(value).map_err(|reason| (field, reason))?;
        }
        range::check_rate(self.rate_limit.per_second)
            .map_err(|reason| ("rate_limit.per_second", reason))?;

        // The cap would cut every wait to less than the first one.
        if r.max_delay < r.base_delay {
            return Err((
                "retry.max_delay",
                format!(
                    "{} is shorter than base_delay ({}); it caps the growing wait, so it must \
                     be at least as long",
                    range::millis_of(r.max_delay),
                    range::millis_of(r.base_delay)
                ),
            ));
        }
        Ok(())
    }
}
