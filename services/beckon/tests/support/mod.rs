//! Starting `beckon serve` processes for tests, and talking to them.

#![allow(dead_code)]

pub mod deployment;
pub mod failover;
pub mod lint;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::Event;

/// A `beckon serve` child process, killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// The admin (metrics) address, when the process was started with one.
    pub admin: Option<String>,
}

impl Served {
    /// Starts `beckon serve <service> <args>` on a free port and waits for its `listening`
    /// line.
    pub fn start(service: &str, args: &[&str]) -> Served {
        Served::start_on(service, "127.0.0.1:0", args)
    }

    /// Like [`Served::start`], on the given address (a restart keeps its clients' URL).
    pub fn start_on(service: &str, listen: &str, args: &[&str]) -> Served {
        Served::spawn(service, listen, args, &[], None)
    }

    /// [`Served::start`] with extra environment variables, and the process's log (stderr)
    /// written to `log` instead of the test's own.
    pub fn start_with(
        service: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Served {
        Served::spawn(service, "127.0.0.1:0", args, env, log)
    }

    fn spawn(
        service: &str,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Served {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .arg("serve")
            .arg(service)
            .args(["--listen", listen])
            .args(args)
            .env("BECKON_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start beckon serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut admin = None;
        let addr = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read a start-up line");
            assert!(n > 0, "beckon serve {service} exited before listening");
            if let Some(a) = line.trim().strip_prefix("admin ") {
                admin = Some(a.to_string());
            } else if let Some(a) = line.trim().strip_prefix("listening ") {
                break a.to_string();
            }
        };
        Served { child, addr, admin }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the drain to finish.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn track(user: &str, event: &str, id: &str, at_ms: i64, props: serde_json::Value) -> Event {
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: user.into(),
        event: event.into(),
        properties: props.as_object().map(json_to_struct),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

/// The messages a gateway recorded to its file so far.
pub fn recorded(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls `check` every 50 ms until it holds or `tries` run out. Waiting on a real process is
/// unavoidable here; nothing is asserted about how long it took.
pub async fn eventually(tries: u32, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    check()
}

/// [`eventually`] for checks that call a service.
pub async fn eventually_async(tries: u32, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    check().await
}

/// Now, from the system clock: the services under test run on it.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/journeys")
}

/// GET on a plain HTTP/1.1 endpoint; the body as text.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect(addr).expect("connect admin");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read response");
    text
}

/// What the health service at `url` says of `service` (`""` for the whole server), or why it
/// could not be asked.
pub async fn health(url: &str, service: &str) -> Result<String, tonic::Status> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let answer = client.check(request).await?.into_inner();
    Ok(answer.status().as_str_name().to_string())
}

/// Sends an `identify` for `user` with an email address, dated a second ago.
pub async fn identify_with_email(
    ingest: &mut beckon_proto::v1::ingest_client::IngestClient<tonic::transport::Channel>,
    user: &str,
) {
    let event = Event {
        r#type: "identify".into(),
        message_id: format!("i-{user}"),
        user_id: user.into(),
        traits: serde_json::json!({"email": "q@example.com"})
            .as_object()
            .map(json_to_struct),
        timestamp: Some(millis_to_timestamp(wall_clock_ms() - 1_000)),
        ..Event::default()
    };
    ingest
        .identify(beckon_proto::v1::IdentifyRequest {
            workspace: "default".into(),
            event: Some(event),
        })
        .await
        .expect("identify");
}
