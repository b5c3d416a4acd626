//! `beckon serve gateway` as a real process says at start, once for each, which channels
//! have no provider and no messages file: their messages are only recorded in memory.

mod support;

use support::Served;

const NOTICE: &str = "are recorded in memory only";

/// The channels the process's JSON log says are recorded in memory only, each at WARN.
fn in_memory_only(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("log file");
    text.lines()
        .filter(|l| l.contains(NOTICE))
        .map(|l| {
            let line: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(line["level"], "WARN", "{l}");
            let channel = line["fields"]["beckon.channel"]
                .as_str()
                .unwrap_or_else(|| panic!("no channel: {l}"));
            let message = line["message"].as_str().unwrap_or_default();
            let said = format!(
                "messages on channel {channel} are recorded in memory only; \
                 configure a provider or --messages-out"
            );
            assert_eq!(message, said, "{l}");
            channel.to_string()
        })
        .collect()
}

#[test]
fn channels_with_no_provider_and_no_messages_file_are_named_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, "channels: { in_app: inbox, sms: record }\n").expect("providers");
    let env = [("BECKON_LOG_FORMAT", "json"), ("BECKON_LOG", "info")];
    let routed = ["--providers", providers.to_str().unwrap_or_default()];

    // No messages file: every channel no provider takes is named.
    let log = dir.path().join("memory.log");
    let mut gateway = Served::start_with("gateway", &routed, &env, Some(&log));
    assert!(gateway.terminate().success());
    assert_eq!(
        in_memory_only(&log),
        vec!["push", "email", "sms", "webhook", "live_activity"]
    );

    // With a messages file nothing is held in memory alone, and nothing is said.
    let out = dir.path().join("sent.jsonl");
    let mut args = routed.to_vec();
    args.extend(["--messages-out", out.to_str().unwrap_or_default()]);
    let log = dir.path().join("file.log");
    let mut gateway = Served::start_with("gateway", &args, &env, Some(&log));
    assert!(gateway.terminate().success());
    assert_eq!(in_memory_only(&log), Vec::<String>::new());
}
