//! `beckon replay` and `beckon explain` bound users' state as `serve` is configured to: by its
//! config file, `BECKON_*` variables and flags, each over the one before, so what they show is
//! what the services did.

use std::path::Path;
use std::process::Command;

use serde_json::json;

/// Says whether the user's `bio` trait was kept.
const BIO: &str = "id: bio\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\n\
    steps:\n  - id: tell\n    message:\n      channel: push\n      \
    body: \"{% if user.bio %}bio kept{% else %}no bio{% endif %}\"\n";

fn events(dir: &Path) -> std::path::PathBuf {
    let track = |id: &str, name: &str, at: &str| {
        json!({
            "type": "track",
            "userId": "u1",
            "event": name,
            "messageId": id,
            "timestamp": at,
        })
    };
    let mut lines = vec![json!({
        "type": "identify",
        "userId": "u1",
        "messageId": "i1",
        "timestamp": "2026-06-01T09:00:00Z",
        "traits": {"bio": "x".repeat(2_000)},
    })];
    // Five event names besides the entry event: a limit under that forgets some.
    for (n, name) in ["A", "B", "C", "D", "E"].iter().enumerate() {
        let at = format!("2026-06-01T09:0{n}:30Z");
        lines.push(track(&format!("v{n}"), &format!("Viewed {name}"), &at));
    }
    lines.push(track("s1", "Signed Up", "2026-06-01T10:00:00Z"));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, text).expect("events");
    path
}

fn beckon(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_beckon"));
    command.args(args);
    for key in [
        "BECKON_CONFIG",
        "BECKON_MAX_EVENT_NAMES",
        "BECKON_MAX_TRAIT_BYTES",
    ] {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("beckon runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_keeps_traits_within_the_configured_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("bio.yaml");
    std::fs::write(&journeys, BIO).expect("journey");
    let events = events(dir.path());
    let messages = dir.path().join("messages.jsonl");
    let replay = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["replay", "--no-progress", "--events"];
        args.push(events.to_str().unwrap_or_default());
        args.extend(["--journeys", journeys.to_str().unwrap_or_default()]);
        args.extend(["--messages", messages.to_str().unwrap_or_default()]);
        args.extend(extra);
        let (code, _, stderr) = beckon(&args, env);
        assert_eq!(code, 0, "{stderr}");
        let text = std::fs::read_to_string(&messages).expect("messages");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a message")).expect("JSON");
        first["body"].as_str().unwrap_or_default().to_string()
    };

    // By default a 2,000-character trait fits the 64 KiB a user keeps.
    assert_eq!(replay(&[], &[]), "bio kept");

    // Under a 1 KiB limit, as a service set so would, it is dropped: by flag, variable or
    // config file alike, and a flag wins over the variable as it does for `serve`.
    assert_eq!(replay(&["--max-trait-bytes", "1024"], &[]), "no bio");
    assert_eq!(replay(&[], &[("BECKON_MAX_TRAIT_BYTES", "1024")]), "no bio");
    let config = dir.path().join("beckon.yaml");
    std::fs::write(&config, "workspace: default\nmax_trait_bytes: 1024\n").expect("config");
    let config = config.to_str().unwrap_or_default();
    assert_eq!(replay(&["--config", config], &[]), "no bio");
    assert_eq!(
        replay(
            &["--max-trait-bytes", "65536"],
            &[("BECKON_CONFIG", config)]
        ),
        "bio kept"
    );
}

#[test]
fn explain_bounds_event_names_as_configured_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("bio.yaml");
    std::fs::write(&journeys, BIO).expect("journey");
    let events = events(dir.path());
    let explain = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["explain", "u1", "--events"];
        args.push(events.to_str().unwrap_or_default());
        args.extend(["--journeys", journeys.to_str().unwrap_or_default()]);
        args.extend(extra);
        let (code, stdout, stderr) = beckon(&args, env);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };

    let plain = explain(&[], &[]);
    assert!(!plain.contains("forgotten"), "{plain}");

    // Two names kept: of the six the journey does not refer to (the five views and the
    // identify), the four least recently seen go.
    let said = "4 event names were forgotten from this user's statistics to stay within the \
                limit of 2 distinct names per user";
    let by_flag = explain(&["--max-event-names", "2"], &[]);
    assert!(by_flag.contains(said), "{by_flag}");
    let by_variable = explain(&[], &[("BECKON_MAX_EVENT_NAMES", "2")]);
    assert!(by_variable.contains(said), "{by_variable}");
    let config = dir.path().join("beckon.yaml");
    std::fs::write(&config, "max_event_names: 2\n").expect("config");
    let by_file = explain(
        &[],
        &[("BECKON_CONFIG", config.to_str().unwrap_or_default())],
    );
    assert!(by_file.contains(said), "{by_file}");

    // Out of range is refused by name, as `serve` refuses it.
    let (code, _, stderr) = beckon(
        &[
            "explain",
            "u1",
            "--events",
            events.to_str().unwrap_or_default(),
            "--journeys",
            journeys.to_str().unwrap_or_default(),
        ],
        &[("BECKON_MAX_EVENT_NAMES", "0")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BECKON_MAX_EVENT_NAMES"), "{stderr}");
}
