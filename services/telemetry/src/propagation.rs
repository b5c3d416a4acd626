//! W3C trace context (`traceparent`, `tracestate`) across process boundaries.
//!
//! Three carriers are supported:
//! - gRPC metadata: [`TraceInterceptor`] injects the caller's context on every client call,
//!   and [`crate::GrpcServerLayer`] extracts it on the server;
//! - plain HTTP headers ([`inject_headers`], [`extract_headers`]);
//! - a single string ([`to_trace_string`], [`from_trace_string`]), for a log entry or a stored
//!   timer. The string is the `traceparent` value, followed by one space and the `tracestate`
//!   value when there is one. A `traceparent` never holds a space, so the split is unambiguous.
//!
//! A timer that fires days after it was set should not be a child of the event that set it:
//! that trace finished long ago. [`link_to_trace_string`] and [`linked_span`] instead start a
//! new trace whose span carries a *link* to the stored context.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The OpenTelemetry context of the current `tracing` span (empty outside any span, or when
/// the OpenTelemetry layer is not installed).
pub fn current_context() -> Context {
    Span::current().context()
}

/// Writes `cx` into gRPC metadata. Nothing is written for an empty or invalid context.
pub fn inject_metadata(cx: &Context, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(cx, &mut MetadataCarrier(metadata));
}

/// Reads the caller's context from gRPC metadata; an absent or malformed `traceparent` gives
/// an empty context, so the span built on it starts a new trace.
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    extract(&MetadataReader(metadata))
}

/// Writes `cx` into HTTP headers.
pub fn inject_headers(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderCarrier(headers));
}

/// Reads a context from HTTP headers (this is what the gRPC server layer uses).
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    extract(&HeaderReader(headers))
}

/// `traceparent[ tracestate]` for `cx`, or `None` when `cx` holds no valid span.
pub fn to_trace_string(cx: &Context) -> Option<String> {
    let mut fields = StringCarrier::default();
    TraceContextPropagator::new().inject_context(cx, &mut fields);
    let parent = fields.traceparent?;
    Some(match fields.tracestate.filter(|s| !s.is_empty()) {
        Some(state) => format!("{parent} {state}"),
        None => parent,
    })
}

/// [`to_trace_string`] of the current span.
pub fn current_trace_string() -> Option<String> {
    to_trace_string(&current_context())
}

/// The context stored by [`to_trace_string`]; empty when `text` is not a valid `traceparent`.
pub fn from_trace_string(text: &str) -> Context {
    let text = text.trim();
    let (parent, state) = match text.split_once(' ') {
        Some((parent, state)) => (parent, Some(state.trim())),
        None => (text, None),
    };
    extract(&StringReader { parent, state })
}

/// Makes `span` a child of the context stored in `text` (the parent of record). Returns
/// `false` when `text` holds no valid context or `span` was already started; the span then
/// stays a root or keeps its parent.
pub fn set_parent_from_trace_string(span: &Span, text: &str) -> bool {
    let cx = from_trace_string(text);
    cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
}

/// Adds a link from `span` to the context stored in `text`, without changing its parent.
/// Returns `false` when `text` holds no valid context.
pub fn link_to_trace_string(span: &Span, text: &str) -> bool {
    let cx = from_trace_string(text);
    let linked = cx.span().span_context().clone();
    if !linked.is_valid() {
        return false;
    }
    span.add_link(linked);
    true
}

/// A new root span named `name`, linked to the context stored in `text` (when valid).
///
/// `tracing` span names are static, so the span's `tracing` name is `beckon.linked` and
/// `name` is its OpenTelemetry name. Prefer creating your own span with `parent: None` and
/// calling [`link_to_trace_string`] when the name is known at compile time.
pub fn linked_span(name: &str, text: &str) -> Span {
    let span = tracing::info_span!(parent: None, "beckon.linked", otel.name = %name);
    link_to_trace_string(&span, text);
    span
}

/// A tonic client interceptor that sends the current span's context with every request:
/// `Client::with_interceptor(channel, TraceInterceptor)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(&current_context(), request.metadata_mut());
        Ok(request)
    }
}

/// Extraction always starts from an empty context: the propagator's default would fall back
/// to the thread's current context, silently parenting a bad header to an unrelated span.
fn extract(reader: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), reader)
}

struct MetadataCarrier<'a>(&'a mut MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes its own lower-case ASCII keys and visible ASCII values,
        // so both conversions succeed; if one ever did not, skipping the header is the safe
        // outcome.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataReader<'a>(&'a MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct HeaderCarrier<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[derive(Default)]
struct StringCarrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for StringCarrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

struct StringReader<'a> {
    parent: &'a str,
    state: Option<&'a str>,
}

impl Extractor for StringReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.parent),
            TRACESTATE => self.state,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn remote(state: &str) -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id"),
            SpanId::from_hex("b7ad6b7169203331").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value(
                state
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .collect::<Vec<_>>(),
            )
            .expect("trace state"),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn string_round_trip_keeps_parent_and_state() {
        let text = to_trace_string(&remote("vendor=abc,other=x y")).expect("valid context");
        assert_eq!(text, format!("{PARENT} vendor=abc,other=x y"));

        let back = from_trace_string(&text);
        let span = back.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert_eq!(sc.trace_state().header(), "vendor=abc,other=x y");
        assert!(sc.is_sampled());
    }

    #[test]
    fn string_without_state_is_just_the_traceparent() {
        assert_eq!(to_trace_string(&remote("")).as_deref(), Some(PARENT));
        assert!(from_trace_string(PARENT).span().span_context().is_valid());
    }

    #[test]
    fn garbage_gives_an_empty_context() {
        for text in [
            "",
            "nonsense",
            "00-zz-yy-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert!(
                !from_trace_string(text).span().span_context().is_valid(),
                "{text}"
            );
        }
        assert_eq!(to_trace_string(&Context::new()), None);
    }

    #[test]
    fn metadata_round_trip() {
        let mut md = MetadataMap::new();
        inject_metadata(&remote("k=v"), &mut md);
        assert_eq!(
            md.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some(PARENT)
        );
        assert_eq!(
            md.get(TRACESTATE).and_then(|v| v.to_str().ok()),
            Some("k=v")
        );
        let cx = extract_metadata(&md);
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );

        let mut headers = http::HeaderMap::new();
        inject_headers(&cx, &mut headers);
        assert_eq!(
            extract_headers(&headers).span().span_context(),
            cx.span().span_context()
        );
    }
}
