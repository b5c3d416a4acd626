//! A circuit breaker per provider: stop calling a provider that keeps failing, probe it again
//! after a cool-down.

use std::sync::Mutex;

use beckon_core::Ts;
use serde::{Deserialize, Serialize};

use super::range;
use super::retry::millis;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Retryable failures in a row that open the circuit.
    #[serde(deserialize_with = "range::read_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe is let through.
    #[serde(
        serialize_with = "millis::serialize",
        deserialize_with = "range::read_cool_down"
    )]
    pub cool_down: std::time::Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: std::time::Duration::from_secs(30),
        }
    }
}

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` retryable failures happened in a row.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Ts },
    /// One probe call is out, started at `since`; its outcome closes or reopens the circuit.
    HalfOpen { since: Ts },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
            .lock()
            .map(|s| *s)
            .unwrap_or(BreakerState::Closed { failures: 0 })
    }

    fn cool_down_ms(&self) -> i64 {
        i64::try_from(self.config.cool_down.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether a call may go to the provider at `now`. An open circuit whose cool-down has
    /// passed lets exactly one probe through. A probe that never reported back (its task was
    /// dropped) is replaced by a new one after another cool-down, so the breaker cannot stick.
    pub fn allow(&self, now: Ts) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };

        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen { since: now };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { since } if now.0 - since.0 >= self.cool_down_ms() => {
                *state = BreakerState::HalfOpen { since: now };
                true
            }
            BreakerState::HalfOpen { .. } => false,
        }
    }

    /// The provider answered, even if it refused the message: it is healthy.
    pub fn record_success(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = BreakerState::Closed { failures: 0 };
        }
    }

    /// The provider failed in a way that says something about its health. Returns true when
    /// this failure opened the circuit.
    pub fn record_failure(&self, now: Ts) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };

        let open = BreakerState::Open {
            until: Ts(now.0.saturating_add(self.cool_down_ms())),
        };
        match *state {
            BreakerState::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.config.failure_threshold.max(1) {
                    *state = open;
                    return true;
                }
                *state = BreakerState::Closed { failures };
                false
            }
            BreakerState::HalfOpen { .. } => {
                *state = open;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            cool_down: std::time::Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_threshold_and_probes_after_cool_down() {
        let b = breaker();
        assert!(b.allow(Ts(0)));
        assert!(!b.record_failure(Ts(0)));
        assert!(b.record_failure(Ts(1)));
        assert_eq!(b.state(), BreakerState::Open { until: Ts(10_001) });
        assert!(!b.allow(Ts(5_000)));

        assert!(b.allow(Ts(10_001)));
        assert_eq!(b.state(), BreakerState::HalfOpen { since: Ts(10_001) });
        assert!(!b.allow(Ts(10_002)), "only one probe at a time");

        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn failed_probe_reopens() {
        let b = breaker();
        b.record_failure(Ts(0));
        b.record_failure(Ts(0));
        assert!(b.allow(Ts(10_000)));
        assert!(b.record_failure(Ts(10_000)));
        assert_eq!(b.state(), BreakerState::Open { until: Ts(20_000) });
    }

    #[test]
    fn a_lost_probe_does_not_stick() {
        let b = breaker();
        b.record_failure(Ts(0));
        b.record_failure(Ts(0));
        assert!(b.allow(Ts(10_000)));
        assert!(!b.allow(Ts(15_000)));
        assert!(b.allow(Ts(20_000)));
    }
}
