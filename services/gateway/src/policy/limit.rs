//! A token bucket per provider, driven by the injected clock.

use std::sync::Mutex;
use std::time::Duration;

use beckon_core::Ts;
use serde::{Deserialize, Serialize};

use super::range;

/// Sends per second a provider may receive from this gateway, with a burst allowance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    #[serde(deserialize_with = "range::read_rate")]
    pub per_second: f64,
    #[serde(deserialize_with = "range::read_burst")]
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 100.0,
            burst: 100,
        }
    }
}

/// A token bucket that hands out reservations: a caller always gets its token, and is told
/// how long to wait first. Reserving instead of polling means a caller waits once, and a
/// virtual clock that only moves when someone sleeps cannot make it spin.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: that many tokens are promised to callers who are waiting.
    tokens: f64,
    updated: Option<Ts>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        let tokens = f64::from(limit.burst.max(1));
        RateLimiter {
            limit,
            state: Mutex::new(Bucket {
                tokens,
                updated: None,
            }),
        }
    }

    /// Takes one token at `now` and returns how long to wait before using it.
    pub fn reserve(&self, now: Ts) -> Duration {
        let rate = self.limit.per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Duration::ZERO;
        }
        let Ok(mut bucket) = self.state.lock() else {
            return Duration::ZERO;
        };

        let burst = f64::from(self.limit.burst.max(1));
        if let Some(updated) = bucket.updated {
            let elapsed = (now.0 - updated.0).max(0) as f64 / 1_000.0;
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        }
        bucket.updated = Some(now);

        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-bucket.tokens / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 2,
        });
        assert_eq!(limiter.reserve(Ts(0)), Duration::ZERO);
        assert_eq!(limiter.reserve(Ts(0)), Duration::ZERO);
        assert_eq!(limiter.reserve(Ts(0)).as_millis(), 100);
        assert_eq!(limiter.reserve(Ts(0)).as_millis(), 200);

        // A second later the debt is paid and the bucket is full again.
        assert_eq!(limiter.reserve(Ts(1_300)), Duration::ZERO);
    }
}
