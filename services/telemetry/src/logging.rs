//! Log line formats. Every line written inside a span carries that span's `trace_id` and
//! `span_id`, so a log search leads straight to the trace and back.
//!
//! Timestamps come from the injected [`Clock`]: in replay, log lines show virtual time, which
//! is the time the logged decision was made in.

use std::fmt;
use std::sync::{Arc, OnceLock};

use beckon_core::Clock;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Writes the time of the injected clock (RFC 3339, milliseconds, UTC).
#[derive(Clone)]
pub(crate) struct ClockTime(pub(crate) Arc<dyn Clock>);

impl FormatTime for ClockTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", self.0.now())
    }
}

/// Finds the OpenTelemetry ids of the span an event belongs to.
///
/// The formatter runs inside the dispatcher, where asking for the current dispatcher answers
/// "none"; so the dispatcher is remembered here once it has been built.
#[derive(Clone, Default)]
pub(crate) struct TraceIds {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl TraceIds {
    pub(crate) fn bind(&self, dispatch: &tracing::Dispatch) {
        // A second bind would only ever come from the same build; ignoring it is correct.
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// `(trace_id, span_id)` in W3C hex, when the event is inside a span with a valid context.
    fn lookup<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        event: &Event<'_>,
    ) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let id = match event.parent() {
            Some(id) => id.clone(),
            None => ctx.lookup_current()?.id(),
        };
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(&id, &dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid()
            .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    }
}

/// The text format of `tracing-subscriber`, with the trace ids appended to the line.
pub(crate) struct TextFormat<F> {
    pub(crate) inner: F,
    pub(crate) ids: TraceIds,
}

impl<S, N, F> FormatEvent<S, N> for TextFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Ids first: the lookup may build the span's context, which must happen before the
        // inner formatter borrows the span's extensions.
        let ids = self.ids.lookup(ctx, event);

        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(line.trim_end_matches('\n'))?;
        if let Some((trace_id, span_id)) = ids {
            write!(writer, " trace_id={trace_id} span_id={span_id}")?;
        }
        writeln!(writer)
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, `fields`, `span`,
/// `spans` (outermost first, with their fields), `trace_id`, `span_id`.
pub(crate) struct JsonFormat {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: TraceIds,
}

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = self.ids.lookup(ctx, event);
        let meta = event.metadata();

        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("timestamp".into(), self.clock.now().to_string().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        if !fields.0.is_empty() {
            line.insert("fields".into(), Value::Object(fields.0));
        }

        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut entry = Map::new();
                entry.insert("name".into(), span.name().into());
                let ext = span.extensions();
                // JsonFields stores each span's fields as a JSON object in text form.
                if let Some(stored) = ext.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored)
                {
                    entry.extend(map);
                }
                spans.push(Value::Object(entry));
            }
        }
        if let Some(current) = spans.last() {
            line.insert("span".into(), current.clone());
        }
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }

        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values, keeping numbers and booleans typed.
#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
