//! Where time comes from. Logic never reads the wall clock; it is handed a [`Clock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::Ts;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Ts;
}

/// The system's wall clock, for live services.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Ts {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ts(since.as_millis() as i64)
    }
}

/// A clock moved by its owner: replay drives it from event timestamps, tests set it directly.
/// It never moves backwards.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    now: Arc<AtomicI64>,
}

impl VirtualClock {
    pub fn new(start: Ts) -> VirtualClock {
        VirtualClock {
            now: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Moves the clock to `to` if that is later than now; returns the resulting time.
    pub fn advance_to(&self, to: Ts) -> Ts {
        let prev = self.now.fetch_max(to.0, Ordering::AcqRel);
        Ts(prev.max(to.0))
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Ts {
        Ts(self.now.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_never_goes_back() {
        let clock = VirtualClock::new(Ts(100));
        assert_eq!(clock.advance_to(Ts(50)), Ts(100));
        assert_eq!(clock.advance_to(Ts(150)), Ts(150));
        assert_eq!(clock.now(), Ts(150));
    }
}
