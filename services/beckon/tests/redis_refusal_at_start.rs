//! A Redis that refuses what a process asks for at start (a database number it does not have)
//! ends the start at once with Redis's own reason; a Redis that is not reachable yet is
//! waited for, each retry said, and given up on with an error naming the URL and the setting.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use beckon_testkit::RedisServer;

/// Connections the server has accepted since it started, read over `con`.
fn connections_received(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

#[test]
fn a_database_number_redis_refuses_ends_the_start_with_its_reason_after_one_attempt() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let mut con = redis.connection().expect("connect");
    let before = connections_received(&mut con);

    let url = format!("redis://127.0.0.1:{}/99999", redis.port());
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "ingest", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", url.as_str()])
        .stdin(Stdio::null())
        .output()
        .expect("run beckon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(!out.status.success(), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("connecting to Redis"), "{stderr}");
    assert!(stderr.contains("DB index is out of range"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The refusal was taken as final: no retries after the first answer.
    let attempts = connections_received(&mut con) - before;
    assert_eq!(attempts, 1, "connection attempts: {attempts}");
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_redis_not_up_yet_is_waited_for() {
    // Something holds the port and hangs up on the first connection, as a server going down
    // would; then nothing listens there until Redis starts on it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let beckon = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "ingest", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", url.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start beckon");
    let mut beckon = Killed(beckon);

    let (first, _) = listener.accept().expect("a first connection attempt");
    drop(first);
    drop(listener);

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = Killed(server);

    // The process keeps trying, reaches the server once it is up, and starts serving.
    let stdout = beckon.0.stdout.take().expect("stdout");
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("listening "));
    assert!(listening, "beckon serve ingest exited before listening");
}

#[test]
fn a_redis_never_reachable_is_retried_aloud_then_named_with_its_setting() {
    // A port just found free, and closed again: nothing answers there.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let shown = format!("redis://:***@127.0.0.1:{port}/0");
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "all", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", url.as_str()])
        .stdin(Stdio::null())
        .output()
        .expect("run beckon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(!out.status.success(), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(!stderr.contains("s3cret"), "{stderr}");

    // Each retry at WARN, with its number and the URL.
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("Redis not reachable"))
        .collect();
    assert_eq!(retries.len(), 6, "{stderr}");
    for (n, line) in retries.iter().enumerate() {
        assert!(line.contains(&format!("attempt={}", n + 1)), "{line}");
        assert!(line.contains(&format!("redis.url={shown}")), "{line}");
    }

    // One error at the end: the URL, the setting in each of its forms, the cause once.
    let error = stderr.lines().last().unwrap_or_default();
    let expected = format!("error: connecting to Redis at {shown} failed after 7 attempts: ");
    assert!(error.starts_with(&expected), "{error}");
    for setting in [
        "redis_url",
        "--redis-url",
        "BECKON_REDIS_URL",
        "config file",
    ] {
        assert!(error.contains(setting), "{setting}: {error}");
    }
    assert_eq!(error.matches("Connection refused").count(), 1, "{error}");
}
