//! The gateway of `beckon serve`: every channel records to a JSON-lines file (or memory)
//! unless the `providers` settings route it to a provider (APNs, FCM, SMTP, SMS, webhook,
//! the in-app inbox). Contact addresses and device tokens come from the users' state, and
//! delivery outcomes go back into the event log as events.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use beckon_core::{Event, OutboundMessage, devices};
use beckon_gateway::{
    Channel, Delivery, DeviceRegistry, EventSink, Gateway, GatewayError, Recipients,
    RecordingChannel,
};
use beckon_ingest::log::EventLog;
use beckon_user_state::StateStore;
use futures::future::BoxFuture;

/// The channels a served gateway records to: every channel a journey can send on.
pub const CHANNELS: [&str; 6] = beckon_gateway::providers::CHANNELS;

/// Messages the in-memory recorder of a served gateway keeps, the most recent ones: enough
/// to look at what went out lately, and a bound on the memory of a process that runs for
/// weeks with no provider and no messages file.
pub const RECORDED_IN_MEMORY: usize = 1_000;

/// Lines queued for the writer at most per batch, so one write does not hold an unbounded
/// amount of memory.
const FILE_BATCH: usize = 4096;

/// How long written lines may wait for their sync to the disk.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A line to append and where to say it is on disk.
struct Queued {
    line: String,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Appends each message as one JSON line: a channel for development and for tests that run
/// the services as processes and need to see what went out.
///
/// Sends queue their line for a writer thread, which appends everything queued in one write;
/// each send returns once its line is written, so a reader of the file sees each message as
/// soon as it is sent, and a process that crashes afterwards has lost none of them (they are
/// in the operating system's cache). A syncer thread puts written lines on the disk within
/// [`SYNC_EVERY`], as Redis's `appendfsync everysec` does for the state they go with: a
/// machine that stops loses at most about that much of both. Waiting for a sync on each send
/// (3 to 8 ms on the disks measured) held up every partition's batch that sent a message.
pub struct FileChannel {
    queue: std::sync::mpsc::Sender<Queued>,
}

impl FileChannel {
    /// Opens `path` for appending once first, so a file that cannot be written is refused
    /// when the channel is built rather than failing every send after start-up.
    pub fn new(path: PathBuf) -> std::io::Result<FileChannel> {
        append(&path, &[])?;

        let (queue, rx) = std::sync::mpsc::channel();
        let (written, to_sync) = std::sync::mpsc::channel();
        let sync_path = path.clone();
        let spawned = std::thread::Builder::new()
            .name("beckon-file-channel".into())
            .spawn(move || write_batches(&path, &rx, &written))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("beckon-file-sync".into())
                    .spawn(move || sync_batches(&sync_path, &to_sync))
            });
        if let Err(e) = spawned {
            // The queue's receiver is gone with the closure: every send reports it.
            tracing::error!(error = %e, "message file writer not started");
        }
        Ok(FileChannel { queue })
    }
}

/// The writer thread: runs until every [`FileChannel`] handle is dropped. Tells the syncer
/// after each write that there is something to sync.
fn write_batches(
    path: &Path,
    rx: &std::sync::mpsc::Receiver<Queued>,
    written: &std::sync::mpsc::Sender<()>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < FILE_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }

        let mut bytes = Vec::with_capacity(batch.iter().map(|q| q.line.len()).sum());
        for q in &batch {
            bytes.extend_from_slice(q.line.as_bytes());
        }
        let result = append(path, &bytes).map_err(|e| e.to_string());
        for q in batch {
            // A sender that gave up waiting needs no answer.
            let _ = q.done.send(result.clone());
        }
        // A syncer that failed to start was logged when the channel was built.
        let _ = written.send(());
    }
}

/// The syncer thread: after a write, waits out [`SYNC_EVERY`] and syncs everything written
/// by then with one sync; ends with the writer, after a last sync.
fn sync_batches(path: &Path, rx: &std::sync::mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        std::thread::sleep(SYNC_EVERY);
        while rx.try_recv().is_ok() {}

        // Any descriptor of the file syncs what every write to it has put there.
        if let Err(e) = std::fs::File::open(path).and_then(|f| f.sync_data()) {
            tracing::warn!(path = %path.display(), error = %e, "message file not synced");
        }
    }
}

/// One append of whole lines: processes sharing the file append whole lines.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)
}

impl Channel for FileChannel {
    fn provider(&self) -> &str {
        "file"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let unavailable = |reason: String| GatewayError::Unavailable {
                provider: "file".into(),
                reason,
            };
            let mut line = crate::replay::message_json(message).to_string();
            line.push('\n');

            let (done, written) = tokio::sync::oneshot::channel();
            self.queue
                .send(Queued { line, done })
                .map_err(|_| unavailable("the file writer has stopped".into()))?;
            written
                .await
                .map_err(|_| unavailable("the file writer has stopped".into()))?
                .map_err(unavailable)?;
            Ok(Delivery {
                provider_id: message.idempotency_key.clone(),
                duplicate: false,
                deferred: false,
            })
        })
    }
}

/// The recorder of a served gateway: `out` (a file) or memory, where only the
/// [`RECORDED_IN_MEMORY`] most recent messages are kept. A file that cannot be opened for
/// appending is an error naming the setting and the path.
pub fn recorder(out: Option<PathBuf>) -> anyhow::Result<Arc<dyn Channel>> {
    match out {
        Some(path) => {
            let channel = FileChannel::new(path.clone()).with_context(|| cannot_append(&path))?;
            Ok(Arc::new(channel))
        }
        None => Ok(Arc::new(memory_recorder())),
    }
}

/// The refusal of a messages file, in the same words whether the start or a check before it
/// finds it.
fn cannot_append(path: &Path) -> String {
    format!(
        "messages_out (--messages-out): cannot append to {}",
        path.display()
    )
}

/// Refuses a messages file that [`recorder`] would refuse, with its words, before a port is
/// taken. A file missing yet is created as the start creates it, and removed again, so a
/// printed configuration leaves nothing behind.
pub fn check_messages_out(path: &Path) -> anyhow::Result<()> {
    let opened = std::fs::OpenOptions::new().append(true).open(path);
    let checked = match opened {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => std::fs::remove_file(path),
                // Made by someone else since: it exists, which is all the start needs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    checked.with_context(|| cannot_append(path))
}

/// The recorder of a served gateway with no messages file: the most recent messages only.
pub fn memory_recorder() -> RecordingChannel {
    RecordingChannel::with_capacity(RECORDED_IN_MEMORY)
}

/// The channels whose messages only the in-memory recorder sees: with no messages file,
/// every channel that no provider takes (unrouted, or routed to `record`).
pub fn recorded_in_memory_only(
    out: Option<&Path>,
    providers: &beckon_gateway::providers::ProvidersConfig,
) -> Vec<&'static str> {
    if out.is_some() {
        return Vec::new();
    }
    CHANNELS
        .into_iter()
        .filter(|c| {
            matches!(
                providers.channels.get(*c),
                None | Some(beckon_gateway::providers::ProviderKind::Record)
            )
        })
        .collect()
}

/// Says once, at start, which channels send nowhere: their messages look sent, but only the
/// most recent ones are kept, in memory, and all are gone when the process stops.
pub fn warn_recorded_in_memory_only(
    out: Option<&Path>,
    providers: &beckon_gateway::providers::ProvidersConfig,
) {
    for channel in recorded_in_memory_only(out, providers) {
        tracing::warn!(
            beckon.channel = %channel,
            kept = RECORDED_IN_MEMORY,
            "messages on channel {channel} are recorded in memory only; \
             configure a provider or --messages-out"
        );
    }
}

/// Says once, at start, that a user-state instance with no gateway to call sends nothing:
/// its messages look sent, but are only recorded, in memory (the most recent ones, gone when
/// the process stops) or in the messages file.
pub fn warn_no_gateway(out: Option<&Path>) {
    const HOW: &str = "set --gateway-url (BECKON_GATEWAY_URL) to send them";
    match out {
        None => tracing::warn!(
            kept = RECORDED_IN_MEMORY,
            "no gateway: messages are recorded in memory only, the last {RECORDED_IN_MEMORY}, \
             and never sent; {HOW}"
        ),
        Some(path) => tracing::warn!(
            path = %path.display(),
            "no gateway: messages are recorded in the messages file only and never sent; {HOW}"
        ),
    }
}

/// A gateway whose every channel records to `out` (a file) or to memory.
pub fn recording_gateway(out: Option<PathBuf>) -> anyhow::Result<Gateway> {
    let channel = recorder(out)?;
    Ok(CHANNELS
        .iter()
        .fold(Gateway::new(), |g, c| g.with(c, channel.clone())))
}

/// Email addresses, phone numbers and device tokens read from the users' state (the
/// `email`, `phone` and `devices` traits, see [`beckon_core::devices`]).
///
/// Removing a device does nothing here: the adapter reports the invalid token as an event,
/// and the user's actor, the only writer of the state, removes it when it applies the event.
pub struct StateContacts {
    store: Arc<dyn StateStore>,
}

impl StateContacts {
    pub fn new(store: Arc<dyn StateStore>) -> StateContacts {
        StateContacts { store }
    }

    async fn state(&self, workspace: &str, user: &str) -> Option<beckon_core::UserState> {
        match self.store.load(workspace, user).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(beckon.workspace = %workspace, error = %e, "contacts not read");
                None
            }
        }
    }
}

/// A deferred message is withdrawn once a goal or exit event of its journey came after its
/// instance was entered: the instance ended on it, or had already run to its end (the message
/// may be its last step) and the user reached the goal since. The journey's record in the
/// state keeps the latest such event, so this holds however many decisions the user has made
/// since. An instance that ended on an exit step, or because its journey was archived, is
/// found in the user's recent decisions. Plain completion is no reason: the message is the
/// very step that completed it. With no state the message goes out as asked.
impl beckon_gateway::retry_queue::Relevance for StateContacts {
    fn withdrawn<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let instance = message.instance?;
            let state = self.state(&message.workspace, &message.user_id).await?;

            let mark = state
                .history
                .get(&message.journey)
                .and_then(|h| h.goal_or_exit.as_ref())
                .filter(|mark| mark.covers(instance));
            if let Some(mark) = mark {
                return Some(format!(
                    "{} at {} (after the message was made)",
                    mark.reason, mark.at
                ));
            }

            state
                .decisions
                .iter()
                .find(|d| {
                    d.journey == message.journey
                        && d.instance == instance
                        && matches!(
                            d.kind,
                            beckon_core::DecisionKind::ExitedOnGoal
                                | beckon_core::DecisionKind::Exited
                        )
                })
                .map(|d| format!("the journey instance ended: {}", d.reason))
        })
    }
}

impl Recipients for StateContacts {
    fn email<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let state = self.state(workspace, user).await?;
            devices::address(&state, devices::EMAIL_TRAIT)
        })
    }

    fn phone<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let state = self.state(workspace, user).await?;
            devices::address(&state, devices::PHONE_TRAIT)
        })
    }
}

impl DeviceRegistry for StateContacts {
    fn tokens<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.state(workspace, user)
                .await
                .map(|state| devices::tokens(&state, platform))
                .unwrap_or_default()
        })
    }

    fn remove<'a>(
        &'a self,
        _workspace: &'a str,
        _user: &'a str,
        _platform: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Delivery events appended straight to the event log, for `serve all` where ingest runs in
/// the same process. Event ids are derived from the send, so a repeat is appended once.
pub struct AppendSink {
    log: Arc<dyn EventLog>,
}

impl AppendSink {
    pub fn new(log: Arc<dyn EventLog>) -> AppendSink {
        AppendSink { log }
    }
}

impl EventSink for AppendSink {
    fn emit<'a>(&'a self, workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Emitted inside the send's span: the outcome's entry continues that trace, so
            // a journey branching on it is part of the same story.
            let tp = beckon_telemetry::current_trace_string();
            if let Err(e) = self.log.append(workspace, &event, tp.as_deref()).await {
                tracing::warn!(
                    beckon.workspace = %workspace,
                    messaging.message.id = %event.message_id,
                    error = %e,
                    "delivery event not appended"
                );
            }
        })
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        event: Event,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let tp = beckon_telemetry::current_trace_string();
            self.log
                .append(workspace, &event, tp.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| GatewayError::Unavailable {
                    provider: "event log".into(),
                    reason: e.to_string(),
                })
        })
    }
}

/// Delivery events with nowhere to go (a gateway alone with no ingest URL): dropped, as the
/// start-up log said.
pub struct NoSink;

impl EventSink for NoSink {
    fn emit<'a>(&'a self, _workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        tracing::debug!(messaging.message.id = %event.message_id, "delivery event not forwarded");
        Box::pin(async {})
    }

    fn deliver<'a>(
        &'a self,
        _workspace: &'a str,
        _event: Event,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async {
            Err(GatewayError::Config {
                field: "ingest_url".into(),
                reason: "not set, so reported outcomes have nowhere to go".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use beckon_core::Ts;
    use futures::future::join_all;

    use super::*;

    fn message(n: usize) -> OutboundMessage {
        OutboundMessage {
            idempotency_key: format!("key-{n}"),
            workspace: "default".into(),
            user_id: format!("user-{n}"),
            journey: "welcome".into(),
            version: 1,
            instance: None,
            step: "hello".into(),
            channel: "push".into(),
            at: Ts::from_millis(1_700_000_000_000),
            title: None,
            subject: Some("x".repeat(n % 97)),
            body: "b".repeat(n),
            to: None,
        }
    }

    /// Two handles on one file stand for two processes: sends made together land once each,
    /// as whole lines, and each is on disk when its send returns.
    #[tokio::test]
    async fn sends_made_together_land_once_each_as_whole_lines() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("sent.jsonl");
        let (a, b) = (
            FileChannel::new(path.clone()).expect("first handle"),
            FileChannel::new(path.clone()).expect("second handle"),
        );
        let messages: Vec<OutboundMessage> = (0..400).map(message).collect();

        let sends = messages.iter().enumerate().map(|(i, m)| {
            let channel = if i % 2 == 0 { &a } else { &b };
            channel.send(m)
        });
        let deliveries = join_all(sends).await;

        assert!(deliveries.iter().all(Result::is_ok));
        let text = std::fs::read_to_string(&path).expect("messages file");
        let keys: Vec<String> = text
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
                v["idempotency_key"].as_str().expect("a key").to_string()
            })
            .collect();
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(keys.len(), 400);
        assert_eq!(distinct.len(), 400);
    }

    #[tokio::test]
    async fn the_memory_recorder_keeps_only_the_most_recent_messages() {
        let recorder = memory_recorder();

        for n in 0..RECORDED_IN_MEMORY + 25 {
            recorder.send(&message(n)).await.expect("recorded");
        }

        let kept = recorder.messages();
        assert_eq!(kept.len(), RECORDED_IN_MEMORY);
        assert_eq!(kept[0].idempotency_key, "key-25");
        let last = format!("key-{}", RECORDED_IN_MEMORY + 24);
        assert_eq!(kept[RECORDED_IN_MEMORY - 1].idempotency_key, last);
    }

    #[test]
    fn channels_no_provider_takes_are_in_memory_only_without_a_messages_file() {
        use beckon_gateway::ProviderKind;

        let mut providers = beckon_gateway::ProvidersConfig::default();
        providers
            .channels
            .insert("in_app".into(), ProviderKind::Inbox);
        providers
            .channels
            .insert("sms".into(), ProviderKind::Record);
        providers
            .channels
            .insert("webhook".into(), ProviderKind::Webhook);

        assert_eq!(
            recorded_in_memory_only(None, &providers),
            vec!["push", "email", "sms", "live_activity"]
        );
        let file = Path::new("/tmp/sent.jsonl");
        assert!(recorded_in_memory_only(Some(file), &providers).is_empty());
    }
}
