//! `beckon serve user-state` with no gateway to call records its messages itself and sends
//! none; it says so once at start, at WARN, with how to send them.

mod support;

use beckon_testkit::RedisServer;
use support::Served;

const NOTICE: &str = "no gateway: messages are recorded";

/// The WARN lines of the process's JSON log that say messages are not sent, as
/// `(message, fields)`.
fn notices(log: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(log).expect("log file");
    text.lines()
        .filter(|l| l.contains(NOTICE))
        .map(|l| {
            let line: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(line["level"], "WARN", "{l}");
            let message = line["message"].as_str().unwrap_or_default().to_string();
            (message, line["fields"].clone())
        })
        .collect()
}

#[test]
fn a_user_state_instance_without_a_gateway_says_its_messages_are_not_sent() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = support::examples();
    let env = [("BECKON_LOG_FORMAT", "json"), ("BECKON_LOG", "info")];
    let common = ["--redis-url", url.as_str(), "--partitions", "2"];

    let mut scheduler = Served::start_with("scheduler", &common, &env, None);
    let scheduler_url = scheduler.url();
    let start = |log: &std::path::Path, extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend([
            "--scheduler-url",
            scheduler_url.as_str(),
            "--journeys",
            journeys.to_str().unwrap_or_default(),
        ]);
        args.extend_from_slice(extra);
        Served::start_with("user-state", &args, &env, Some(log))
    };

    // Nothing but memory: said once, with the bound and the setting that sends them.
    let log = dir.path().join("memory.log");
    let mut user_state = start(&log, &[]);
    assert!(user_state.terminate().success());
    let said = notices(&log);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(
        said[0].0,
        "no gateway: messages are recorded in memory only, the last 1000, and never sent; \
         set --gateway-url (BECKON_GATEWAY_URL) to send them"
    );
    assert_eq!(said[0].1["kept"], 1000, "{said:?}");

    // A messages file holds them all, but they are still not sent.
    let out = dir.path().join("sent.jsonl");
    let log = dir.path().join("file.log");
    let mut user_state = start(&log, &["--messages-out", out.to_str().unwrap_or_default()]);
    assert!(user_state.terminate().success());
    let said = notices(&log);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0]
            .0
            .starts_with("no gateway: messages are recorded in the messages file only"),
        "{said:?}"
    );
    assert_eq!(said[0].1["path"], out.display().to_string(), "{said:?}");

    // With a gateway to call, nothing is said.
    let mut gateway = Served::start_with("gateway", &common, &env, None);
    let log = dir.path().join("gateway.log");
    let mut user_state = start(&log, &["--gateway-url", &gateway.url()]);
    assert!(user_state.terminate().success());
    assert_eq!(notices(&log), Vec::new());

    assert!(gateway.terminate().success());
    assert!(scheduler.terminate().success());
}
