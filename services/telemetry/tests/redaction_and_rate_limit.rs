//! Secrets never reach a log line, and a repeated error is logged a bounded number of times
//! per interval, followed by a count of what was held back.

mod support;

use std::sync::Arc;

use beckon_core::{Duration, Ts, VirtualClock};
use beckon_telemetry::{Admit, LogRateLimiter, Redacted, TelemetryConfig, build_with_writer};

#[derive(Debug)]
#[allow(dead_code)] // Only read through Debug.
struct ProviderConfig {
    team_id: String,
    signing_key: Redacted<String>,
}

#[test]
fn redacted_values_never_print() {
    let secret = "-----BEGIN PRIVATE KEY----- abc123";
    let config = ProviderConfig {
        team_id: "TEAM42".into(),
        signing_key: Redacted::new(secret.to_owned()),
    };

    for shown in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{}", config.signing_key),
        format!("{:?}", config.signing_key),
        format!("{:>40}", config.signing_key),
    ] {
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
    assert!(format!("{config:?}").contains("TEAM42"));
    assert_eq!(config.signing_key.expose(), secret);

    // Through a real log line, as field value and as Display.
    let out = support::Captured::default();
    let clock = Arc::new(VirtualClock::new(Ts(0)));
    let guard = build_with_writer(TelemetryConfig::new("beckon-redact"), clock, out.clone())
        .expect("telemetry");
    tracing::dispatcher::with_default(guard.dispatch(), || {
        tracing::info!(key = ?config.signing_key, shown = %config.signing_key, ?config, "loaded");
    });
    let logged = out.text();
    assert!(logged.contains("loaded"), "{logged}");
    assert!(!logged.contains("abc123"), "{logged}");
    assert_eq!(logged.matches("[redacted]").count(), 3, "{logged}");
}

#[test]
fn repeated_errors_are_limited_then_summarised() {
    let clock = VirtualClock::new(Ts(10_000));
    let limiter = LogRateLimiter::new(Arc::new(clock.clone()), 2, Duration::from_millis(1_000));

    let burst: Vec<Admit> = (0..5).map(|_| limiter.admit("redis.write")).collect();
    assert_eq!(
        burst,
        vec![
            Admit::Log { suppressed: 0 },
            Admit::Log { suppressed: 0 },
            Admit::Suppress,
            Admit::Suppress,
            Admit::Suppress,
        ]
    );
    // Keys are limited independently.
    assert_eq!(limiter.admit("apns.500"), Admit::Log { suppressed: 0 });

    // Still inside the interval: still held back.
    clock.advance_to(Ts(10_999));
    assert_eq!(limiter.admit("redis.write"), Admit::Suppress);

    // The first line of the next interval reports what was held back.
    clock.advance_to(Ts(11_000));
    assert_eq!(limiter.admit("redis.write"), Admit::Log { suppressed: 4 });
    assert_eq!(limiter.admit("redis.write"), Admit::Log { suppressed: 0 });
    assert_eq!(limiter.admit("redis.write"), Admit::Suppress);

    // A burst that stops still gets its summary once its interval is over.
    assert!(limiter.take_summaries().is_empty(), "interval not over yet");
    clock.advance_to(Ts(12_500));
    assert_eq!(
        limiter.take_summaries(),
        vec![("redis.write".to_owned(), 1)]
    );
    assert!(
        limiter.take_summaries().is_empty(),
        "summaries are taken once"
    );
    assert_eq!(limiter.admit("redis.write"), Admit::Log { suppressed: 0 });
}
