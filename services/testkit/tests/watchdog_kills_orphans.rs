//! A test process killed with SIGKILL (no unwinding, no Drop) leaves no redis-server behind:
//! the watchdog started beside the server kills it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use beckon_testkit::RedisServer;

const CHILD_ENV: &str = "BECKON_TESTKIT_HOLD_SERVER";

/// Run as a child by the test below: starts a server, prints its port, waits to be killed.
#[test]
#[ignore = "started by killed_test_process_leaves_no_server"]
fn hold_server() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let server = RedisServer::start_own(Default::default()).expect("start");
    // The parent reads the port from this line.
    #[allow(clippy::print_stdout)]
    {
        println!("PORT {}", server.port());
    }
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn killed_test_process_leaves_no_server() {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "hold_server",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child test");
    let stdout = child.stdout.take().expect("stdout");
    let port: u16 = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest writes "test hold_server ... " on the same line before the test's output.
        .find_map(|line| {
            let at = line.find("PORT ")?;
            line[at + 5..].trim().parse().ok()
        })
        .expect("child printed its port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().expect("SIGKILL the child test process");
    child.wait().expect("reap");

    // The watchdog polls once a second; allow it a few rounds.
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(
        gone,
        "redis-server on port {port} outlived its killed test process"
    );
}
