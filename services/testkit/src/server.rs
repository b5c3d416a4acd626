//! One `redis-server` process on a loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::{Result, TestkitError};

/// Readiness is polled this often, this many times (10 s in all): loading a large AOF or a
/// busy CI machine can make start-up slow, and a count keeps the wall clock out of the code.
const POLL: Duration = Duration::from_millis(20);
const POLL_ATTEMPTS: u32 = 500;
/// A port picked by binding port 0 can be taken by someone else before the server binds it;
/// starting again on a fresh port resolves that race.
const START_ATTEMPTS: u32 = 5;

/// How often an append-only file is flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// After every write: an acknowledged write survives a kill.
    Always,
    /// Once a second: the Redis default for AOF.
    EverySec,
}

impl Fsync {
    fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
        }
    }
}

/// How a server is started. The default keeps nothing on disk (`--save "" --appendonly no`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Turns the append-only file on, with this fsync policy.
    pub aof: Option<Fsync>,
    /// Further `--name value` pairs, e.g. cluster settings.
    pub extra: Vec<(String, String)>,
}

impl Options {
    pub fn aof(fsync: Fsync) -> Options {
        Options {
            aof: Some(fsync),
            extra: Vec::new(),
        }
    }
}

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    port: u16,
    options: Options,
    /// Data directory; kept across [`RedisServer::restart`] so AOF tests see their files.
    dir: Option<TempDir>,
    child: Option<Child>,
    watchdog: Option<Child>,
    external: Option<String>,
    namespace: String,
}

impl RedisServer {
    /// Starts a server with default options, or uses `REDIS_URL` when it is set.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(Options::default())
    }

    /// Starts a server with these options, or uses `REDIS_URL` when it is set (options that
    /// need a server of our own, such as AOF, are then up to whoever runs that server).
    pub fn start_with(options: Options) -> Result<RedisServer> {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return Ok(RedisServer::external(url, options));
        }
        RedisServer::start_own(options)
    }

    /// Starts a server of our own, whatever `REDIS_URL` says.
    pub fn start_own(options: Options) -> Result<RedisServer> {
        let dir = tempfile::Builder::new().prefix("beckon-redis-").tempdir()?;
        let mut server = RedisServer {
            port: 0,
            options,
            dir: Some(dir),
            child: None,
            watchdog: None,
            external: None,
            namespace: "bk".to_string(),
        };
        server.launch(None)?;
        Ok(server)
    }

    fn external(url: String, options: Options) -> RedisServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        RedisServer {
            port: 0,
            options,
            dir: None,
            child: None,
            watchdog: None,
            external: Some(url),
            namespace: format!("bkt-{}-{n}", std::process::id()),
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        match &self.external {
            Some(url) => url.clone(),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The key namespace stores should use: `bk` on a server of our own, a unique one on a
    /// shared `REDIS_URL` server.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The port, or 0 for an external server.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The data directory (AOF and RDB files), if the server is ours.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    /// Kills the server with SIGKILL, as a crash would, and starts it again on the same port
    /// and data directory. With AOF on, what was fsynced is loaded back.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_external() {
            return Err(TestkitError::Unsupported("restart"));
        }
        self.kill();
        self.launch(Some(self.port))
    }

    /// Stops the server with `SHUTDOWN` (which flushes the AOF) and starts it again on the same
    /// port and data directory.
    pub fn restart_graceful(&mut self) -> Result<()> {
        if self.is_external() {
            return Err(TestkitError::Unsupported("restart"));
        }
        // The server closes the connection while shutting down, so the reply is an error.
        if let Ok(mut con) = self.connection() {
            let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.reap_watchdog();
        self.launch(Some(self.port))
    }

    /// Kills the server with SIGKILL and waits for it to exit. Safe to call twice.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.reap_watchdog();
    }

    /// Where `needle` still appears under this server's namespace, in a key's name or its
    /// content (see [`crate::mentions`]).
    pub fn mentions(&self, needle: &str) -> Result<Vec<String>> {
        let mut con = self.connection()?;
        crate::traces::mentions(&mut con, &format!("{}:*", self.namespace), needle)
    }

    /// A plain synchronous connection, for checks in tests.
    pub fn connection(&self) -> Result<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_connection_with_timeout(Duration::from_secs(2))?)
    }

    fn reap_watchdog(&mut self) {
        if let Some(mut dog) = self.watchdog.take() {
            let _ = dog.kill();
            let _ = dog.wait();
        }
    }

    fn launch(&mut self, port: Option<u16>) -> Result<()> {
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            // A restart first tries the old port, so clients' URLs stay valid.
            let port = match port {
                Some(p) if attempt == 0 => p,
                _ => free_port()?,
            };
            match self.launch_on(port) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestkitError::NotReady {
            port: 0,
            log: String::new(),
        }))
    }

    fn launch_on(&mut self, port: u16) -> Result<()> {
        let dir = self.dir_path()?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        match self.options.aof {
            Some(fsync) => cmd.args(["--appendonly", "yes", "--appendfsync", fsync.as_str()]),
            None => cmd.args(["--appendonly", "no"]),
        };
        for (name, value) in &self.options.extra {
            cmd.arg(format!("--{name}")).arg(value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: "redis-server".into(),
            source,
        })?;
        let pid = child.id();
        self.child = Some(child);
        self.port = port;
        self.watchdog = Some(watchdog(pid)?);

        if self.wait_ready()? {
            return Ok(());
        }
        self.kill();
        Err(TestkitError::NotReady {
            port,
            log: log_tail(&dir.join("redis.log")),
        })
    }

    fn dir_path(&self) -> Result<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .ok_or(TestkitError::Unsupported("a data directory"))
    }

    /// True once PING answers PONG; false if the process exited (port taken) or never answered.
    fn wait_ready(&mut self) -> Result<bool> {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let client = redis::Client::open(url)?;
        for _ in 0..POLL_ATTEMPTS {
            if let Some(child) = self.child.as_mut()
                && child.try_wait()?.is_some()
            {
                return Ok(false);
            }
            // While an AOF loads, PING answers LOADING: keep waiting.
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500))
                && let Ok(pong) = redis::cmd("PING").query::<String>(&mut con)
                && pong == "PONG"
            {
                return Ok(true);
            }
            std::thread::sleep(POLL);
        }
        Ok(false)
    }

    /// Deletes the keys of this test's namespace on a shared server.
    fn clean_external(&self) -> Result<()> {
        let mut con = self.connection()?;
        let pattern = format!("{}:*", self.namespace);
        let keys: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut con)?
            .collect::<std::result::Result<_, _>>()?;
        for key in keys {
            redis::cmd("DEL").arg(key).query::<()>(&mut con)?;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.is_external() {
            let _ = self.clean_external();
        }
        self.kill();
    }
}

/// A free loopback port: bind port 0, read what the kernel chose, release it.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts a shell that kills `pid` once this test process is gone. Drop handles the normal
/// case; this covers a test process killed without unwinding. The shell also exits when the
/// server does, and is reaped by [`RedisServer::kill`].
pub(crate) fn watchdog(pid: u32) -> Result<Child> {
    let script = "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 1; \
                  done; kill -9 \"$2\" 2>/dev/null";
    Command::new("sh")
        .args(["-c", script, "beckon-redis-watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| TestkitError::Spawn {
            program: "sh".into(),
            source,
        })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
