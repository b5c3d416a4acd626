//! An export that cannot reach its collector is said in the log, as an error line naming the
//! failure: a wrong collector address used to fail without a word.
//!
//! A test binary of its own: the exporter reports from its own thread, so the pipeline is
//! installed as the process's default.

use std::io::Write;
use std::sync::{Arc, Mutex};

use beckon_core::SystemClock;
use beckon_telemetry::TelemetryConfig;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

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
fn a_collector_that_is_not_there_is_said() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = TelemetryConfig::new("beckon-export-failure");
    config.log_filter = "info".to_owned();
    config.traces_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let lines = Lines::default();
    let guard = beckon_telemetry::build_with_writer(config, Arc::new(SystemClock), lines.clone())
        .expect("telemetry");
    tracing::dispatcher::set_global_default(guard.dispatch().clone()).expect("global default");

    tracing::info_span!("ingest.track").in_scope(|| {});
    let flushed = guard.force_flush();
    assert!(flushed.is_err(), "the export cannot succeed");

    let text = lines.text();
    let said = text
        .lines()
        .find(|l| l.contains("ExportError"))
        .unwrap_or_else(|| panic!("no line about the failed export in:\n{text}"));
    assert!(said.contains("ERROR"), "{said}");
    // The SDK's lifecycle lines stay out at `info`.
    assert!(!text.contains(" INFO opentelemetry"), "{text}");
}
