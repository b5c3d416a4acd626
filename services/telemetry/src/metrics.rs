//! Every Beckon metric, defined once with its OpenTelemetry name, unit and labels.
//!
//! Services record through the typed methods of [`Metrics`] rather than creating instruments
//! of their own, so names, units and label keys cannot drift between services, and the
//! dashboard and alert rules in `deploy/observability/` match what is emitted.
//!
//! On the Prometheus endpoint, dots become underscores, counters gain `_total` and units a
//! suffix: `rpc.server.duration` (ms) is scraped as `rpc_server_duration_milliseconds`.

use beckon_core::Ts;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// The instrumentation scope every Beckon instrument is created under.
pub const METER_NAME: &str = "beckon";

/// Bucket bounds for request and provider durations, in milliseconds.
const DURATION_BOUNDS_MS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

/// Bucket bounds for timer lateness, in milliseconds: timers are promised within seconds, so
/// the interesting range runs from "on time" to several minutes late.
const LATENESS_BOUNDS_MS: &[f64] = &[
    0.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 30_000.0, 60_000.0,
    300_000.0,
];

/// State of a provider's circuit breaker, exported as `beckon.circuit.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// Typed handles to every Beckon instrument. Cloning is cheap; clone it into each component.
#[derive(Clone, Debug)]
pub struct Metrics {
    rpc_server_duration: Histogram<f64>,
    rpc_server_requests: Counter<u64>,
    rpc_server_errors: Counter<u64>,
    log_lag: Gauge<i64>,
    partitions_unowned: Gauge<i64>,
    events_applied: Counter<u64>,
    events_rejected: Counter<u64>,
    events_duplicates: Counter<u64>,
    event_names_evicted: Counter<u64>,
    traits_dropped: Counter<u64>,
    actors_live: UpDownCounter<i64>,
    users_hibernated: Gauge<i64>,
    actors_activations: Counter<u64>,
    segment_entries: Counter<u64>,
    segment_exits: Counter<u64>,
    journey_entries: Counter<u64>,
    journey_exits: Counter<u64>,
    journey_conversions: Counter<u64>,
    timers_pending: Gauge<i64>,
    timer_lateness: Histogram<f64>,
    deliveries: Counter<u64>,
    provider_duration: Histogram<f64>,
    circuit_state: Gauge<i64>,
    sends_deferred: Gauge<i64>,
}

impl Metrics {
    /// Creates every instrument on `meter`. Use the meter of a [`crate::TelemetryGuard`]
    /// (`guard.metrics()` does this) or [`Metrics::global`] after [`crate::init`].
    pub fn new(meter: &Meter) -> Metrics {
        let counter = |name: &'static str, unit: &'static str, help: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(help)
                .build()
        };
        let gauge = |name: &'static str, unit: &'static str, help: &'static str| {
            meter
                .i64_gauge(name)
                .with_unit(unit)
                .with_description(help)
                .build()
        };
        let histogram =
            |name: &'static str, help: &'static str, bounds: &[f64]| -> Histogram<f64> {
                meter
                    .f64_histogram(name)
                    .with_unit("ms")
                    .with_description(help)
                    .with_boundaries(bounds.to_vec())
                    .build()
            };

        Metrics {
            rpc_server_duration: histogram(
                "rpc.server.duration",
                "Duration of inbound gRPC calls",
                DURATION_BOUNDS_MS,
            ),
            rpc_server_requests: counter(
                "rpc.server.requests",
                "{request}",
                "Inbound gRPC calls, by status code",
            ),
            rpc_server_errors: counter(
                "rpc.server.errors",
                "{request}",
                "Inbound gRPC calls that failed on the server's side",
            ),
            log_lag: gauge(
                "beckon.log.lag",
                "{entry}",
                "Event log entries appended but not yet applied, per partition",
            ),
            partitions_unowned: gauge(
                "beckon.partitions.unowned",
                "{partition}",
                "Partitions whose lease no live instance holds",
            ),
            events_applied: counter(
                "beckon.events.applied",
                "{event}",
                "Events applied to user state",
            ),
            events_rejected: counter(
                "beckon.events.rejected",
                "{event}",
                "Events refused, by reason: the caller was answered with an error and the event \
                 was not taken",
            ),
            events_duplicates: counter(
                "beckon.events.duplicates",
                "{event}",
                "Events acknowledged without being appended again, their message id already \
                 taken: mostly clients retrying a call whose answer they lost",
            ),
            event_names_evicted: counter(
                "beckon.state.event_names_evicted",
                "{name}",
                "Event names forgotten from users' statistics to keep each user within the \
                 distinct-name limit",
            ),
            traits_dropped: counter(
                "beckon.state.traits_dropped",
                "{change}",
                "Trait changes dropped because they would have taken a user's traits past the \
                 size limit",
            ),
            actors_live: meter
                .i64_up_down_counter("beckon.actors.live")
                .with_unit("{actor}")
                .with_description("User actors currently running")
                .build(),
            users_hibernated: gauge(
                "beckon.users.hibernated",
                "{user}",
                "Users held in compact form with no actor running, per partition",
            ),
            actors_activations: counter(
                "beckon.actors.activations",
                "{actor}",
                "User actors started from stored state",
            ),
            segment_entries: counter(
                "beckon.segment.entries",
                "{user}",
                "Users entering a segment",
            ),
            segment_exits: counter("beckon.segment.exits", "{user}", "Users leaving a segment"),
            journey_entries: counter(
                "beckon.journey.entries",
                "{user}",
                "Users entering a journey",
            ),
            journey_exits: counter(
                "beckon.journey.exits",
                "{user}",
                "Users leaving a journey, by reason",
            ),
            journey_conversions: counter(
                "beckon.journey.conversions",
                "{user}",
                "Users reaching a journey's goal",
            ),
            timers_pending: gauge(
                "beckon.timers.pending",
                "{timer}",
                "Timers set and not yet fired, per partition",
            ),
            timer_lateness: histogram(
                "beckon.timer.lateness",
                "How long after its due time a timer fired",
                LATENESS_BOUNDS_MS,
            ),
            deliveries: counter(
                "beckon.deliveries",
                "{message}",
                "Message deliveries, by channel, provider and outcome",
            ),
            provider_duration: histogram(
                "beckon.provider.duration",
                "Duration of calls to delivery providers",
                DURATION_BOUNDS_MS,
            ),
            circuit_state: gauge(
                "beckon.circuit.state",
                // An annotation, not "1": Prometheus would append `_ratio` to a unit of 1.
                "{state}",
                "Provider circuit breaker: 0 closed, 1 half-open, 2 open",
            ),
            sends_deferred: gauge(
                "beckon.sends.deferred",
                "{message}",
                "Messages a provider could not take, waiting in the gateway's retry queue",
            ),
        }
    }

    /// Instruments on the global meter provider, which [`crate::init`] sets. Before that (or
    /// without it) they record into a no-op provider, which is what a library test wants.
    pub fn global() -> Metrics {
        Metrics::new(&opentelemetry::global::meter(METER_NAME))
    }

    /// One finished inbound call. `duration_ms` is measured by the caller, normally
    /// [`crate::GrpcServerLayer`].
    pub fn record_rpc(&self, service: &str, method: &str, code: tonic::Code, duration_ms: f64) {
        let attrs = [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", code as i64),
        ];
        self.rpc_server_duration
            .record(duration_ms.max(0.0), &attrs);
        self.rpc_server_requests.add(1, &attrs);
        if crate::grpc::is_server_error(code) {
            self.rpc_server_errors.add(1, &attrs);
        }
    }

    pub fn set_log_lag(&self, partition: u32, entries: i64) {
        self.log_lag.record(entries, &[partition_attr(partition)]);
    }

    /// How many partitions have no owner, as seen by the instance that checks leases.
    pub fn set_partitions_unowned(&self, count: i64) {
        self.partitions_unowned.record(count, &[]);
    }

    /// Events applied, written and acknowledged together: counted once, however many times
    /// a failed batch was applied before.
    pub fn events_applied(&self, count: u64) {
        if count > 0 {
            self.events_applied.add(count, &[]);
        }
    }

    /// An event refused: bad input (`missing_user_id`, `bad_timestamp`, `bad_field`, ...) or
    /// ingest unable to take it now (`overloaded`, `log_unavailable`). `reason` is a short,
    /// fixed code, never user input: each distinct value becomes a time series.
    pub fn event_rejected(&self, reason: &'static str) {
        self.events_rejected
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// An event acknowledged as already taken (its message id was seen within the
    /// deduplication window), and not appended again. This is how at-least-once delivery
    /// looks from the server: a client that lost an answer sends the event again. It is not
    /// a refusal, so it is counted apart from [`Metrics::event_rejected`].
    pub fn event_duplicate(&self) {
        self.events_duplicates.add(1, &[]);
    }

    /// Event names a user's statistics forgot, least recently seen first, to stay within
    /// the per-user limit.
    pub fn event_names_evicted(&self, count: u64) {
        if count > 0 {
            self.event_names_evicted.add(count, &[]);
        }
    }

    /// Trait changes dropped to keep a user's traits within the size limit.
    pub fn traits_dropped(&self, count: u64) {
        if count > 0 {
            self.traits_dropped.add(count, &[]);
        }
    }

    pub fn actor_started(&self) {
        self.actors_live.add(1, &[]);
    }

    pub fn actor_stopped(&self) {
        self.actors_live.add(-1, &[]);
    }

    /// How many users of a partition are hibernated: in memory in compact form, with no
    /// actor. Zero once the partition stops here, since its users leave with it.
    pub fn set_users_hibernated(&self, partition: u32, users: i64) {
        self.users_hibernated
            .record(users, &[partition_attr(partition)]);
    }

    /// How many messages wait in the gateway's retry queue (all replicas' when shared).
    pub fn set_sends_deferred(&self, messages: i64) {
        self.sends_deferred.record(messages, &[]);
    }

    /// An actor was started from stored state (as opposed to found already running).
    pub fn actor_activated(&self) {
        self.actors_activations.add(1, &[]);
    }

    pub fn segment_entered(&self, segment: &str) {
        self.segment_entries
            .add(1, &[KeyValue::new("segment", segment.to_owned())]);
    }

    pub fn segment_exited(&self, segment: &str) {
        self.segment_exits
            .add(1, &[KeyValue::new("segment", segment.to_owned())]);
    }

    pub fn journey_entered(&self, journey: &str) {
        self.journey_entries
            .add(1, &[KeyValue::new("journey", journey.to_owned())]);
    }

    /// `reason` is a fixed code such as `completed`, `goal`, `exit_event` or `opted_out`.
    pub fn journey_exited(&self, journey: &str, reason: &'static str) {
        let attrs = [
            KeyValue::new("journey", journey.to_owned()),
            KeyValue::new("reason", reason),
        ];
        self.journey_exits.add(1, &attrs);
    }

    pub fn journey_converted(&self, journey: &str) {
        self.journey_conversions
            .add(1, &[KeyValue::new("journey", journey.to_owned())]);
    }

    pub fn set_timers_pending(&self, partition: u32, timers: i64) {
        self.timers_pending
            .record(timers, &[partition_attr(partition)]);
    }

    /// A timer due at `due` fired at `fired` (both from the service's clock, so replay
    /// measures virtual lateness). Early fires count as zero.
    pub fn record_timer_lateness(&self, due: Ts, fired: Ts) {
        let late = fired.as_millis().saturating_sub(due.as_millis()).max(0);
        self.timer_lateness.record(late as f64, &[]);
    }

    /// One delivery outcome. All three are short codes from a closed set (`push`/`apns`/
    /// `sent`), never user input: the caller maps anything else to `other`.
    pub fn delivery(&self, channel: &str, provider: &str, outcome: &'static str) {
        let attrs = [
            KeyValue::new("channel", channel.to_owned()),
            KeyValue::new("provider", provider.to_owned()),
            KeyValue::new("outcome", outcome),
        ];
        self.deliveries.add(1, &attrs);
    }

    /// One call to a provider, whatever it answered.
    pub fn record_provider_call(&self, channel: &str, provider: &str, duration_ms: f64) {
        let attrs = [
            KeyValue::new("channel", channel.to_owned()),
            KeyValue::new("provider", provider.to_owned()),
        ];
        self.provider_duration.record(duration_ms.max(0.0), &attrs);
    }

    pub fn set_circuit_state(&self, channel: &str, provider: &str, state: CircuitState) {
        let attrs = [
            KeyValue::new("channel", channel.to_owned()),
            KeyValue::new("provider", provider.to_owned()),
        ];
        self.circuit_state.record(state as i64, &attrs);
    }
}

fn partition_attr(partition: u32) -> KeyValue {
    KeyValue::new("partition", i64::from(partition))
}
