//! What every adapter shares around a provider call: retries with backoff, a rate limit and a
//! circuit breaker, configured per provider.

mod breaker;
mod limit;
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
