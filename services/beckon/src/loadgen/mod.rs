//! A gRPC load generator for the Ingest service.
//!
//! Synthetic users ([`traffic`]) send their events through `Track` and `Identify` calls over a
//! few HTTP/2 connections, with a bounded number of calls in flight. Either at a target rate
//! (open loop: each event has a planned send time, and its latency counts from that time, so a
//! server that falls behind shows it instead of slowing the generator down; only the timer's
//! own lateness within its millisecond is left out), or as fast as the server answers (closed
//! loop: latency counts from the call).
//!
//! With `batch` above one, each call is a `Batch` of that many events instead: a client that
//! buffers, as SDKs do. Its figures are those of another way of sending, reported apart.
//!
//! The report gives acknowledged events, duplicates, errors by gRPC code and acknowledgement
//! latency percentiles.

pub mod traffic;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use beckon_core::Clock;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{BatchRequest, IdentifyRequest, TrackRequest, batch_result};
use hdrhistogram::Histogram;
// Elapsed times are measured with tokio's monotonic clock; event timestamps come from the
// injected clock.
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::serve::config::Bounds;

pub use traffic::{Traffic, TrafficShape};

/// How a load run goes.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Ingest (or `serve all`) address, e.g. `http://127.0.0.1:50051`.
    pub url: String,
    pub workspace: String,
    pub seed: u64,
    pub shape: TrafficShape,
    /// Starts every user and message id.
    pub prefix: String,
    /// Events to send; the run also stops at `duration`, whichever comes first.
    pub events: u64,
    pub duration: StdDuration,
    /// Events per second; `None` sends as fast as the server answers.
    pub rate: Option<f64>,
    /// Calls in flight at most.
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    /// Events per call: one sends `Track` and `Identify` calls, more sends `Batch` calls.
    pub batch: usize,
    /// Print a status line every second on standard error (only when it is a terminal).
    pub progress: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:50051".into(),
            workspace: "default".into(),
            seed: 42,
            shape: TrafficShape::default(),
            prefix: "lg-".into(),
            events: 100_000,
            duration: StdDuration::from_secs(60),
            rate: None,
            concurrency: 128,
            connections: 4,
            batch: 1,
            progress: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad ingest address {url}: {source}")]
    Address {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("a load task failed: {0}")]
    Task(String),
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            samples: h.len(),
        }
    }

    /// `p50 1.200 ms, p99 3.400 ms, p99.9 5.600 ms (max ..., n=...)`
    pub fn as_ms(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms (max {:.3} ms, n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.samples
        )
    }
}

/// What a load run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    /// Acknowledged calls (appended or recognised as duplicates).
    pub acked: u64,
    pub duplicates: u64,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    pub elapsed: StdDuration,
    pub latency: Percentiles,
    pub users_seen: usize,
}

impl LoadReport {
    pub fn acked_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A few lines for people.
    pub fn render(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "sent {} events in {:.2} s; acknowledged {} ({:.0}/s), duplicates {}, users {}\n\
             errors: {errors}\nack latency: {}\n",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.acked,
            self.acked_per_sec(),
            self.duplicates,
            self.users_seen,
            self.latency.as_ms()
        )
    }
}

struct Shared {
    traffic: Mutex<(Traffic, u64)>,
    acked: AtomicU64,
}

/// Runs the load until `events` were sent or `duration` passed, and reports.
pub async fn run(config: &LoadConfig, clock: Arc<dyn Clock>) -> Result<LoadReport, LoadError> {
    let channels = connect(config).await?;
    let shared = Arc::new(Shared {
        traffic: Mutex::new((
            Traffic::new(config.shape.clone(), config.seed, &config.prefix),
            0,
        )),
        acked: AtomicU64::new(0),
    });

    let start = Instant::now();
    let deadline = start + config.duration;
    let progress = (config.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress_lines(shared.clone())));

    let mut tasks = Vec::with_capacity(config.concurrency);
    for i in 0..config.concurrency.max(1) {
        let client = IngestClient::new(channels[i % channels.len()].clone());
        let (shared, clock, config) = (shared.clone(), clock.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            worker(client, shared, clock, config, start, deadline).await
        }));
    }

    let mut report = LoadReport::default();
    let mut latency = histogram();
    for task in tasks {
        let part = task.await.map_err(|e| LoadError::Task(e.to_string()))?;
        report.sent += part.sent;
        report.acked += part.acked;
        report.duplicates += part.duplicates;
        for (code, n) in part.errors {
            *report.errors.entry(code).or_default() += n;
        }
        latency
            .add(&part.latency)
            .map_err(|e| LoadError::Task(e.to_string()))?;
    }
    report.elapsed = start.elapsed();
    report.latency = Percentiles::of(&latency);
    if let Some(p) = progress {
        p.abort();
    }
    if let Ok(t) = shared.traffic.lock() {
        report.users_seen = t.0.users_seen();
    }
    Ok(report)
}

async fn connect(config: &LoadConfig) -> Result<Vec<Channel>, LoadError> {
    let address = |source| LoadError::Address {
        url: config.url.clone(),
        source,
    };
    // Bounded like the client commands': a peer that takes the connection and never answers
    // ends the run with errors instead of holding it past its duration for ever.
    let mut endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(address)?
        .tcp_nodelay(true)
        .connect_timeout(crate::grpc::CLIENT_CONNECT_TIMEOUT)
        .timeout(crate::grpc::CLIENT_CALL_TIMEOUT);
    // An ingest behind a public certificate: TLS checked against the bundled web roots.
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        endpoint = endpoint.tls_config(tls).map_err(address)?;
    }
    let mut channels = Vec::new();
    for _ in 0..config.connections.max(1) {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| LoadError::Connect {
                url: config.url.clone(),
                source,
            })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Microseconds from 1 us to 100 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds that the crate documents as valid: this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

struct Part {
    sent: u64,
    acked: u64,
    duplicates: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

async fn worker(
    mut client: IngestClient<Channel>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    config: LoadConfig,
    start: Instant,
    deadline: Instant,
) -> Part {
    let mut part = Part {
        sent: 0,
        acked: 0,
        duplicates: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
    };
    let per_call = config.batch.max(1) as u64;
    loop {
        // Take the next event numbers; with a rate they also fix when each event is due.
        let first = match shared.traffic.lock() {
            Ok(mut t) if t.1 < config.events => {
                let first = t.1;
                t.1 = (first + per_call).min(config.events);
                first..t.1
            }
            _ => break,
        };
        let planned: Vec<Instant> = match config.rate {
            Some(rate) if rate > 0.0 => first
                .map(|n| start + StdDuration::from_secs_f64(n as f64 / rate))
                .collect(),
            _ => vec![Instant::now(); (first.end - first.start) as usize],
        };
        let (Some(&earliest), Some(&last)) = (planned.first(), planned.last()) else {
            break;
        };
        if earliest >= deadline {
            break;
        }
        // A buffering client sends when its last event is due.
        let ahead = Instant::now() < last;
        tokio::time::sleep_until(last).await;
        let late = timer_lateness(ahead, last, Instant::now());

        let now_ms = clock.now().as_millis();
        let Ok(events) = shared.traffic.lock().map(|mut t| {
            (0..planned.len())
                .map(|_| t.0.next_event(now_ms))
                .collect::<Vec<_>>()
        }) else {
            break;
        };
        part.sent += events.len() as u64;
        if per_call == 1 {
            for event in events {
                let result = send_one(&mut client, &config.workspace, event).await;
                part.record(&shared, result, earliest + late);
            }
        } else {
            let req = BatchRequest {
                workspace: config.workspace.clone(),
                events,
            };
            match client.batch(req).await {
                Ok(reply) => {
                    let results = reply.into_inner().results;
                    for (r, at) in results.into_iter().zip(&planned) {
                        let outcome = match r.outcome {
                            Some(batch_result::Outcome::Ack(ack)) => Ok(ack.appended),
                            _ => Err("Rejected".to_string()),
                        };
                        part.record(&shared, outcome, *at + late);
                    }
                }
                Err(status) => {
                    *part
                        .errors
                        .entry(format!("{:?}", status.code()))
                        .or_default() += planned.len() as u64;
                }
            }
        }
    }
    part
}

/// Finest lateness of a tokio timer: it fires on whole milliseconds of its own clock, so a
/// call due in the middle of one goes out up to this much after its planned time.
const TIMER_RESOLUTION: StdDuration = StdDuration::from_millis(1);

/// How much of a call's wait for its planned time to count as the generator's own, not the
/// server's: when the generator was early and slept, the timer's lateness up to
/// [`TIMER_RESOLUTION`]. A generator that was behind (its previous calls were slow to be
/// answered) sends at once, and all of its wait since the planned time counts, as it must in
/// an open loop; so does any lateness of the timer beyond its resolution, which a machine too
/// busy to wake the generator causes.
fn timer_lateness(ahead: bool, due: Instant, woke: Instant) -> StdDuration {
    if !ahead {
        return StdDuration::ZERO;
    }
    woke.saturating_duration_since(due).min(TIMER_RESOLUTION)
}

/// Sends one event by the call of its type; answers whether it was appended.
async fn send_one(
    client: &mut IngestClient<Channel>,
    workspace: &str,
    event: beckon_proto::v1::Event,
) -> Result<bool, String> {
    let result = if event.r#type == "identify" {
        let req = IdentifyRequest {
            workspace: workspace.to_string(),
            event: Some(event),
        };
        client.identify(req).await
    } else {
        let req = TrackRequest {
            workspace: workspace.to_string(),
            event: Some(event),
        };
        client.track(req).await
    };
    result
        .map(|ack| ack.into_inner().appended)
        .map_err(|status| format!("{:?}", status.code()))
}

impl Part {
    /// Counts one event's answer; `planned` is when it was due to be sent.
    fn record(&mut self, shared: &Shared, result: Result<bool, String>, planned: Instant) {
        let micros = planned.elapsed().as_micros() as u64;
        match result {
            Ok(appended) => {
                self.acked += 1;
                shared.acked.fetch_add(1, Ordering::Relaxed);
                if !appended {
                    self.duplicates += 1;
                }
                self.latency.saturating_record(micros.max(1));
            }
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }
}

async fn progress_lines(shared: Arc<Shared>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        let now = shared.acked.load(Ordering::Relaxed);
        eprintln!("acknowledged {now} ({}/s)", now - last);
        last = now;
    }
}

/// Flags of `beckon loadgen`. Every count and rate is checked against its range as it is
/// parsed: a zero would send nothing or stall, a huge one would exhaust memory, tasks or
/// connections halfway through a run.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Ingest (or `serve all`) address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub url: String,
    #[arg(long, default_value = "default")]
    pub workspace: String,
    /// Seed of the synthetic users. It is part of every user and message id (after the
    /// prefix): the same seed and prefix send the same events again, which the server applies
    /// once; another seed sends new events from new users.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Users in the population (1 to 10,000,000).
    #[arg(long, default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = |t: &str| USERS.parse_arg::<u32>(t))]
    pub users: u32,
    /// Zipf exponent of user activity (0 is uniform, at most 10).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = |t: &str| ZIPF.parse(t))]
    pub zipf: f64,
    /// Events to send (1 to 10^12).
    #[arg(long, default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = |t: &str| EVENTS.parse_arg::<u64>(t))]
    pub events: u64,
    /// Stop after this long even if events remain (e.g. `30s`, `5m`; at most 7 days).
    #[arg(long, default_value = "60s", allow_hyphen_values = true,
          value_parser = run_duration)]
    pub duration: beckon_core::Duration,
    /// Events per second (above 0, at most 10,000,000); without it, as fast as the server
    /// answers.
    #[arg(long, allow_negative_numbers = true, value_parser = |t: &str| RATE.parse(t))]
    pub rate: Option<f64>,
    /// Calls in flight at most (1 to 65,536).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true,
          value_parser = |t: &str| CONCURRENCY.parse_arg::<usize>(t))]
    pub concurrency: usize,
    /// HTTP/2 connections (1 to 1,024).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true,
          value_parser = |t: &str| CONNECTIONS.parse_arg::<usize>(t))]
    pub connections: usize,
    /// Events per call: 1 sends `Track` and `Identify` calls, more sends `Batch` calls of
    /// that many events (at most 1,000).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = |t: &str| BATCH.parse_arg::<u16>(t))]
    pub batch: u16,
    /// Starts every user and message id, before the seed; change it (or the seed) to meet
    /// new users on the same server.
    #[arg(long, default_value = "lg-")]
    pub prefix: String,
    /// Never print status lines.
    #[arg(long)]
    pub no_progress: bool,
}

/// Every user has a slot in the Zipf table and a flag: about 9 bytes each.
const USERS: Bounds = Bounds {
    name: "users",
    min: 1,
    max: 10_000_000,
    words: "1 to 10,000,000 users",
};

const EVENTS: Bounds = Bounds {
    name: "events",
    min: 1,
    max: 1_000_000_000_000,
    words: "1 to 10^12 events",
};

/// Each call in flight is a task of its own.
const CONCURRENCY: Bounds = Bounds {
    name: "concurrency",
    min: 1,
    max: 65_536,
    words: "1 to 65,536 calls in flight",
};

const CONNECTIONS: Bounds = Bounds {
    name: "connections",
    min: 1,
    max: 1_024,
    words: "1 to 1,024 connections",
};

/// The Batch call takes at most 1,000 events.
const BATCH: Bounds = Bounds {
    name: "batch",
    min: 1,
    max: 1_000,
    words: "1 to 1,000 events per call",
};

/// The range of a flag that takes a real number.
struct RealBounds {
    min: f64,
    /// Whether `min` itself is allowed.
    min_included: bool,
    max: f64,
    words: &'static str,
}

/// 0 picks users uniformly; past 10 nearly every event goes to the first user anyway.
const ZIPF: RealBounds = RealBounds {
    min: 0.0,
    min_included: true,
    max: 10.0,
    words: "0 to 10",
};

/// A rate of 0 would never send; the pacing is planned per event, so the top is generous.
const RATE: RealBounds = RealBounds {
    min: 0.0,
    min_included: false,
    max: 10_000_000.0,
    words: "above 0, at most 10,000,000 events per second",
};

impl RealBounds {
    fn parse(&self, text: &str) -> Result<f64, String> {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a number; allowed {}", self.words))?;
        let above_min = if self.min_included {
            value >= self.min
        } else {
            value > self.min
        };
        // NaN fails both comparisons.
        if above_min && value <= self.max {
            Ok(value)
        } else {
            Err(format!("{value} is out of range; allowed {}", self.words))
        }
    }
}

/// The longest run: past a week a load test is a deployment.
const MAX_RUN_MS: i64 = 7 * 86_400_000;

fn run_duration(text: &str) -> Result<beckon_core::Duration, String> {
    let allowed = "allowed more than 0, at most 7 days (e.g. `30s`, `5m`, `2h`)";
    if text.trim().starts_with('-') {
        return Err(format!("{text} is negative; {allowed}"));
    }
    let duration: beckon_core::Duration = text.parse().map_err(|e| format!("{e}; {allowed}"))?;
    if duration.as_millis() <= 0 || duration.as_millis() > MAX_RUN_MS {
        return Err(format!("{text} is out of range; {allowed}"));
    }
    Ok(duration)
}

impl LoadArgs {
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            url: self.url.clone(),
            workspace: self.workspace.clone(),
            seed: self.seed,
            shape: TrafficShape {
                users: self.users,
                zipf: self.zipf,
                ..TrafficShape::default()
            },
            prefix: self.prefix.clone(),
            events: self.events,
            duration: StdDuration::from_millis(self.duration.as_millis().max(0) as u64),
            rate: self.rate,
            concurrency: self.concurrency,
            connections: self.connections,
            batch: usize::from(self.batch),
            progress: !self.no_progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_timers_own_lateness_is_left_out() {
        let due = Instant::now();
        let ms = StdDuration::from_millis;
        let us = StdDuration::from_micros;

        // Early and woken within the timer's millisecond: that wait is the generator's.
        assert_eq!(timer_lateness(true, due, due + us(700)), us(700));

        // Woken later than the timer can explain: only its resolution is left out.
        assert_eq!(timer_lateness(true, due, due + ms(5)), ms(1));

        // Behind its plan: every moment since the planned time counts against the server.
        assert_eq!(timer_lateness(false, due, due + us(700)), StdDuration::ZERO);
        assert_eq!(timer_lateness(false, due, due + ms(5)), StdDuration::ZERO);

        // A timer that fired early leaves nothing out.
        assert_eq!(timer_lateness(true, due + ms(1), due), StdDuration::ZERO);
    }
}
