//! Quieting the logs does not switch traces off: with the log filter at `warn`, an `info`
//! span is still exported, while an `info` line is not written.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beckon_core::SystemClock;
use beckon_telemetry::testing::Collector;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[test]
fn spans_are_exported_when_logs_are_at_warn() {
    let collector = Collector::start().expect("collector");
    let mut config = support::config("beckon-quiet", collector.endpoint());
    config.log_filter = "warn".to_owned();
    let lines = Lines::default();
    let guard = beckon_telemetry::build_with_writer(config, Arc::new(SystemClock), lines.clone())
        .expect("telemetry");
    let _default = tracing::dispatcher::set_default(guard.dispatch());

    tracing::info_span!("user_state.apply").in_scope(|| {
        tracing::info!("applied");
        tracing::warn!("slow");
    });

    guard.force_flush().expect("flush");
    let spans = collector.wait_for_spans(Duration::from_secs(5), |s| !s.is_empty());
    assert!(
        spans.iter().any(|s| s.name == "user_state.apply"),
        "{spans:#?}"
    );

    let written =
        String::from_utf8_lossy(&lines.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(written.contains("slow"), "{written}");
    assert!(!written.contains("applied"), "{written}");
}
