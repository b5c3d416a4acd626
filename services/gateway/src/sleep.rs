//! Waiting between retries and for rate-limit tokens, behind a trait so tests do not wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use beckon_core::{Ts, VirtualClock};
use futures::future::BoxFuture;

/// Something that can wait. Live services use [`TokioSleeper`]; tests and replay use
/// [`VirtualSleeper`], which moves a virtual clock instead of waiting.
pub trait Sleeper: Send + Sync + 'static {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Waits on the tokio timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Moves a [`VirtualClock`] forward by the requested duration and returns at once, keeping
/// a log of every wait so a test can check the backoff that was chosen.
#[derive(Clone, Debug)]
pub struct VirtualSleeper {
    clock: VirtualClock,
    slept: Arc<Mutex<Vec<Duration>>>,
}

impl VirtualSleeper {
    pub fn new(clock: VirtualClock) -> VirtualSleeper {
        VirtualSleeper {
            clock,
            slept: Arc::default(),
        }
    }

    /// Every wait asked for so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Sleeper for VirtualSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if let Ok(mut slept) = self.slept.lock() {
            slept.push(duration);
        }

        let clock = self.clock.clone();
        Box::pin(async move {
            let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            let now = beckon_core::Clock::now(&clock);
            clock.advance_to(Ts(now.0.saturating_add(ms)));

            // Let other tasks run, as a real wait would.
            tokio::task::yield_now().await;
        })
    }
}
