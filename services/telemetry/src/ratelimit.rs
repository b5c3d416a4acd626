//! Rate limiting for repeated log lines.
//!
//! A Redis outage or a provider answering 500 makes the same error happen thousands of times a
//! second. Logging each one buries everything else and costs real money in a log pipeline, yet
//! dropping them silently hides how bad it is. [`LogRateLimiter`] lets the first `limit` lines
//! per key through in each interval, counts the rest, and hands the count to the next line
//! that gets through (or to [`LogRateLimiter::take_summaries`]) so it can say "and 4,212 more".
//!
//! Time comes from the injected [`Clock`], so tests move it by hand.
//!
//! ```ignore
//! if let Admit::Log { suppressed } = limiter.admit("redis.write") {
//!     tracing::error!(error = %e, suppressed, "writing user state failed");
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beckon_core::{Clock, Duration, Ts};

/// Most keys remembered at once; beyond it, keys whose interval ended are forgotten first.
const MAX_KEYS: usize = 4_096;

/// Whether a line may be written now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `suppressed` lines with this key were dropped since the last one written.
    Log { suppressed: u64 },
    /// Drop it; it has been counted.
    Suppress,
}

#[derive(Debug)]
struct Window {
    started: Ts,
    logged: u32,
    suppressed: u64,
}

/// At most `limit` lines per key per `interval`; see the module documentation.
pub struct LogRateLimiter {
    clock: Arc<dyn Clock>,
    limit: u32,
    interval: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

impl std::fmt::Debug for LogRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRateLimiter")
            .field("limit", &self.limit)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl LogRateLimiter {
    /// `limit` of 0 is treated as 1: a limiter that never logs would hide an outage.
    pub fn new(clock: Arc<dyn Clock>, limit: u32, interval: Duration) -> LogRateLimiter {
        LogRateLimiter {
            clock,
            limit: limit.max(1),
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Decides for one line with `key` (a fixed code naming the failure, not user input).
    pub fn admit(&self, key: &str) -> Admit {
        let now = self.clock.now();
        // A poisoned lock only means another thread panicked mid-update of counters; the
        // counters are still usable.
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());

        if !windows.contains_key(key) && windows.len() >= MAX_KEYS {
            let interval = self.interval;
            windows.retain(|_, w| !expired(w, now, interval));
            if windows.len() >= MAX_KEYS {
                // Too many distinct keys to track: let the line through rather than lose it.
                return Admit::Log { suppressed: 0 };
            }
        }

        let window = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        let mut carried = 0;
        if expired(window, now, self.interval) {
            carried = window.suppressed;
            *window = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged < self.limit {
            window.logged += 1;
            // Suppressed lines of this interval are reported by the first line of the next.
            Admit::Log {
                suppressed: carried,
            }
        } else {
            window.suppressed += 1;
            Admit::Suppress
        }
    }

    /// Counts of lines suppressed in intervals that have ended, per key, resetting them. Call
    /// it periodically so that a burst that stopped still gets its summary line.
    pub fn take_summaries(&self) -> Vec<(String, u64)> {
        let now = self.clock.now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        windows.retain(|key, w| {
            if !expired(w, now, self.interval) {
                return true;
            }
            if w.suppressed > 0 {
                out.push((key.clone(), w.suppressed));
            }
            false
        });
        out.sort();
        out
    }
}

fn expired(window: &Window, now: Ts, interval: Duration) -> bool {
    now >= window.started.saturating_add(interval)
}
