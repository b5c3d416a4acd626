//! A timer stores the trace context of the step that set it as a string; when it fires, the
//! new span starts its own trace and carries a link back to that stored context.

mod support;

use std::time::Duration;

use beckon_telemetry::testing::Collector;
use beckon_telemetry::{
    current_trace_string, from_trace_string, linked_span, set_parent_from_trace_string,
};
use opentelemetry::trace::TraceContextExt as _;

#[test]
fn fired_timer_links_to_the_stored_context() {
    let collector = Collector::start().expect("collector");
    let guard = support::telemetry("beckon-scheduler", collector.endpoint());
    let _default = tracing::dispatcher::set_default(guard.dispatch());

    // The step that sets the timer stores its context with the timer.
    let stored = {
        let _step = tracing::info_span!("journey.step").entered();
        current_trace_string().expect("a span has a context")
    };
    let original = from_trace_string(&stored);
    let original = original.span().span_context().clone();

    // Days later, the timer fires.
    linked_span("timer.fire", &stored).in_scope(|| {
        tracing::info!("timer fired");
    });

    // A delivery retried from a stored context stays inside the original trace instead.
    let retry = tracing::info_span!(parent: None, "delivery.retry");
    assert!(set_parent_from_trace_string(&retry, &stored));
    drop(retry);
    assert!(!set_parent_from_trace_string(
        &tracing::info_span!("x"),
        "not a traceparent"
    ));

    guard.force_flush().expect("flush");
    let spans = collector.wait_for_spans(Duration::from_secs(5), |s| s.len() >= 3);
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} in {spans:#?}"))
    };

    let step = by_name("journey.step");
    assert_eq!(step.trace_id, original.trace_id().to_string());
    assert_eq!(step.span_id, original.span_id().to_string());

    let fired = by_name("timer.fire");
    assert_eq!(fired.parent_span_id, None, "a linked span is a root");
    assert_ne!(
        fired.trace_id, step.trace_id,
        "a linked span starts its own trace"
    );
    assert_eq!(
        fired.links,
        vec![(step.trace_id.clone(), step.span_id.clone())]
    );

    let retried = by_name("delivery.retry");
    assert_eq!(retried.trace_id, step.trace_id);
    assert_eq!(
        retried.parent_span_id.as_deref(),
        Some(step.span_id.as_str())
    );
    assert!(retried.links.is_empty());
}
