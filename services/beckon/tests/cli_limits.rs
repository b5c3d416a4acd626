//! Settings outside what the process can honour are refused by name before any work starts,
//! instead of failing halfway (too many threads, open files) or being quietly clamped: flags,
//! environment variables and config file values alike.

use std::process::Command;

#[test]
fn replay_refuses_a_worker_count_out_of_range_naming_the_flag() {
    for workers in ["0", "257", "100000", "-1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["replay", "--events", "missing.jsonl", "--workers", workers])
            .output()
            .expect("beckon runs");
        let stderr = String::from_utf8_lossy(&out.stderr);

        assert_eq!(out.status.code(), Some(2), "{workers}: {stderr}");
        assert!(stderr.contains("--workers"), "{workers}: {stderr}");
        assert!(stderr.contains("1..=256"), "{workers}: {stderr}");
        assert!(!stderr.contains("panicked"), "{workers}: {stderr}");
    }
}

#[test]
fn loadgen_refuses_counts_and_rates_out_of_range_naming_the_flag() {
    // A port of the test's own: a flag that slipped through would aim the run here, and
    // nothing else.
    let own = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", own.local_addr().expect("address"));
    let cases: &[(&str, &str, &str)] = &[
        ("--rate", "0", "above 0"),
        ("--rate", "-5", "above 0"),
        ("--rate", "NaN", "above 0"),
        ("--rate", "inf", "above 0"),
        ("--users", "0", "1..=10000000"),
        ("--users", "-3", "1..=10000000"),
        ("--users", "4294967296", "1..=10000000"),
        ("--concurrency", "0", "1..=65536"),
        ("--concurrency", "1000000", "1..=65536"),
        ("--connections", "0", "1..=1024"),
        ("--batch", "0", "1..=1000"),
        ("--batch", "-1", "1..=1000"),
        ("--batch", "100000", "1..=1000"),
        ("--events", "0", "1..=1000000000000"),
        ("--events", "-10", "1..=1000000000000"),
        ("--zipf", "-1", "0 to 10"),
        ("--duration", "0s", "at most 7 days"),
        ("--duration", "-5s", "at most 7 days"),
        ("--duration", "30d", "at most 7 days"),
    ];
    for (flag, value, range) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["loadgen", "--url", &url, "--no-progress", flag, value])
            .output()
            .expect("beckon runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("{flag} {value}: {stderr}");

        assert_eq!(out.status.code(), Some(2), "{case}");
        assert!(stderr.contains(flag), "{case}");
        assert!(stderr.contains(range), "{case}");
        assert!(!stderr.contains("unexpected argument"), "{case}");
        assert!(!stderr.contains("panicked"), "{case}");
    }
}

/// `beckon serve all --print-config` with these flags, environment and config file text:
/// exit code and stderr.
fn serve_config(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_beckon"));
    command.args(["serve", "all", "--print-config"]).args(args);
    if let Some(text) = file {
        let path = dir.path().join("beckon.yaml");
        std::fs::write(&path, text).expect("write config");
        command.arg("--config").arg(path);
    }
    let out = command
        .envs(env.iter().copied())
        .output()
        .expect("beckon runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_numeric_flags_out_of_range_naming_the_flag_and_range() {
    let cases: &[(&str, &str, &str)] = &[
        ("--hibernate-after-ms", "0", "1000..=31536000000"),
        (
            "--hibernate-after-ms",
            "18446744073709551615",
            "1000..=31536000000",
        ),
        ("--evict-after-ms", "-5", "1000..=31536000000"),
        (
            "--evict-after-ms",
            "99999999999999999999999",
            "1000..=31536000000",
        ),
        ("--lease-ttl-ms", "0", "300..=600000"),
        ("--timer-claim-ms", "-1", "1000..=86400000"),
        ("--partitions", "0", "1..=4096"),
        ("--partitions", "-8", "1..=4096"),
        ("--threads", "0", "1..=256"),
        ("--threads", "100000", "1..=256"),
        ("--dedup-window-ms", "1000", "60000..=2592000000"),
        ("--redis-timeout-ms", "50", "100..=60000"),
        ("--redis-timeout-ms", "-1", "100..=60000"),
    ];
    for (flag, value, range) in cases {
        // A negative number as a separate argument is a value, not an unknown flag.
        let (code, stderr) = serve_config(&[flag, value], &[], None);
        let case = format!("{flag} {value}: {stderr}");
        assert_eq!(code, Some(2), "{case}");
        assert!(stderr.contains(flag), "{case}");
        assert!(stderr.contains(range), "{case}");
        assert!(!stderr.contains("unexpected argument"), "{case}");
        assert!(!stderr.contains("panicked"), "{case}");
    }

    // The environment goes through the same check, and is named as it was given.
    let cases: &[(&str, &str, &str)] = &[
        ("BECKON_HIBERNATE_AFTER_MS", "0", "1000..=31536000000"),
        ("BECKON_EVICT_AFTER_MS", "-5", "1000..=31536000000"),
        ("BECKON_LEASE_TTL_MS", "0", "300..=600000"),
        ("BECKON_TIMER_CLAIM_MS", "soon", "1000..=86400000"),
        ("BECKON_PARTITIONS", "99999", "1..=4096"),
        ("BECKON_THREADS", "100000", "1..=256"),
        (
            "BECKON_DEDUP_WINDOW_MS",
            "31536000000",
            "60000..=2592000000",
        ),
        ("BECKON_REDIS_TIMEOUT_MS", "600000", "100..=60000"),
        (
            "BECKON_REDIS_CLUSTER",
            "maybe",
            "possible values: true, false",
        ),
    ];
    for (variable, value, range) in cases {
        let (code, stderr) = serve_config(&[], &[(variable, value)], None);
        let case = format!("{variable}={value}: {stderr}");
        assert_eq!(code, Some(2), "{case}");
        let said = format!("invalid value '{value}' for '{variable}'");
        assert!(stderr.contains(&said), "{case}");
        assert!(stderr.contains(range), "{case}");
        let flag = variable
            .trim_start_matches("BECKON_")
            .to_lowercase()
            .replace('_', "-");
        assert!(!stderr.contains(&format!("--{flag}")), "{case}");
    }

    // A flag given as well wins, and is the one named.
    let env = [("BECKON_PARTITIONS", "16")];
    let (code, stderr) = serve_config(&["--partitions", "0"], &env, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0' for '--partitions <PARTITIONS>'"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_config_file_values_out_of_range_with_line_and_column() {
    let file = "workspace: shop\nevict_after_ms: 18446744073709551615\n";
    let (code, stderr) = serve_config(&[], &[], Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("evict_after_ms"), "{stderr}");
    assert!(stderr.contains("1000..=31536000000"), "{stderr}");
    assert!(stderr.contains("line 2 column 17"), "{stderr}");

    let file = "partitions: 16\nredis_timeout_ms: 10\n";
    let (code, stderr) = serve_config(&[], &[], Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis_timeout_ms"), "{stderr}");
    assert!(stderr.contains("100..=60000"), "{stderr}");
    assert!(stderr.contains("line 2 column 19"), "{stderr}");

    let file = "partitions: 16\nthreads: -2\n";
    let (code, stderr) = serve_config(&[], &[], Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("threads: -2 is out of range"), "{stderr}");
    assert!(stderr.contains("line 2 column 10"), "{stderr}");
}

#[test]
fn serve_refuses_unknown_and_repeated_config_keys_with_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        // The very first character, where the YAML reader would leave the place out.
        (
            "partitons: 16\n",
            "unknown field `partitons`",
            "line 1 column 1",
        ),
        (
            "workspace: shop\nproviders:\n  chanels: {}\n",
            "providers: unknown field `chanels`",
            "line 3 column 3",
        ),
        (
            "workspace: shop\npartitions: 8\npartitions: 16\n",
            "duplicate key `partitions`",
            "line 3 column 1",
        ),
        // A map would have kept the last route without a word.
        (
            "providers:\n  channels:\n    push: record\n    push: inbox\n",
            "providers.channels: duplicate key `push`",
            "line 4 column 5",
        ),
        // A channel no journey sends on would route nothing.
        (
            "providers:\n  channels:\n    push: record\n    pigeon: record\n",
            "providers.channels: unknown channel `pigeon`; known channels: push, in_app, \
             email, sms, webhook, live_activity",
            "line 4 column 5",
        ),
    ];
    for (file, reason, place) in cases {
        let (code, stderr) = serve_config(&[], &[], Some(file));
        let case = format!("{file:?}: {stderr}");
        assert_eq!(code, Some(2), "{case}");
        assert!(stderr.contains(reason), "{case}");
        assert!(stderr.contains(place), "{case}");
    }
}

/// A providers section with one webhook whose settings end with `extra` (indented under
/// `webhook:`).
fn webhook_providers(extra: &str) -> String {
    format!(
        "providers:\n  channels: {{ webhook: webhook }}\n  webhook:\n    \
         url: http://127.0.0.1:9/hooks\n    secret: {{ env: BECKON_TEST_HOOK_SECRET }}\n{extra}"
    )
}

#[test]
fn serve_refuses_provider_policy_values_out_of_range_naming_the_path() {
    let policy = "providers.webhook.policy";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "    policy: { retry: { max_attempts: 0 } }\n",
            "retry.max_attempts: 0 is out of range",
            "1..=20",
            "line 6 column 38",
        ),
        (
            "    policy: { retry: { base_delay: 0 } }\n",
            "retry.base_delay: 0 is out of range",
            "1..=60000",
            "line 6 column 36",
        ),
        (
            "    policy: { rate_limit: { per_second: 0 } }\n",
            "rate_limit.per_second: 0 is out of range",
            "above 0",
            "line 6 column 41",
        ),
        (
            "    policy: { rate_limit: { per_second: -2.5 } }\n",
            "rate_limit.per_second: -2.5 is out of range",
            "above 0",
            "line 6 column 41",
        ),
        (
            "    policy: { rate_limit: { burst: 0 } }\n",
            "rate_limit.burst: 0 is out of range",
            "1..=1000000",
            "line 6 column 36",
        ),
        (
            "    policy: { breaker: { failure_threshold: 0, cool_down: 1000 } }\n",
            "breaker.failure_threshold: 0 is out of range",
            "1..=1000",
            "line 6 column 45",
        ),
        (
            "    policy: { breaker: { cool_down: -1 } }\n",
            "breaker.cool_down: -1 is out of range",
            "1..=3600000",
            "line 6 column 37",
        ),
        (
            "    policy: { retry: { max_atempts: 3 } }\n",
            "retry: unknown field `max_atempts`",
            "max_attempts",
            "line 6 column 24",
        ),
    ];
    for (extra, reason, range, place) in cases {
        let file = webhook_providers(extra);
        let (code, stderr) = serve_config(&[], &[], Some(&file));
        let case = format!("{extra:?}: {stderr}");
        assert_eq!(code, Some(2), "{case}");
        assert!(stderr.contains(&format!("{policy}.{reason}")), "{case}");
        assert!(stderr.contains(range), "{case}");
        assert!(stderr.contains(place), "{case}");
    }

    // Timeouts of every provider, zero and negative.
    for timeout in ["0", "-100"] {
        let file = webhook_providers(&format!("    timeout_ms: {timeout}\n"));
        let (code, stderr) = serve_config(&[], &[], Some(&file));
        assert_eq!(code, Some(2), "{stderr}");
        let reason = format!("providers.webhook.timeout_ms: {timeout} is out of range");
        assert!(stderr.contains(&reason), "{stderr}");
        assert!(stderr.contains("line 6 column 17"), "{stderr}");
    }

    // A cap shorter than the first wait: each value alone is in range.
    let file = webhook_providers("    policy: { retry: { base_delay: 500, max_delay: 100 } }\n");
    let (code, stderr) = serve_config(&[], &[], Some(&file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("providers.webhook.policy.retry.max_delay: 100 is shorter than base_delay"),
        "{stderr}"
    );

    // A separate providers file names an unknown channel by its own line and column.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("providers.yaml");
    std::fs::write(&path, "channels: {pigeon: record}\n").expect("write providers");
    let args = ["--providers", path.to_str().unwrap_or_default()];
    let (code, stderr) = serve_config(&args, &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("channels: unknown channel `pigeon`; known channels: push"),
        "{stderr}"
    );
    assert!(stderr.contains("line 1 column 12"), "{stderr}");

    // A separate providers file is read the same way, its own lines counted.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("providers.yaml");
    let text = "webhook:\n  url: http://127.0.0.1:9/hooks\n  secret: { env: X }\n  \
                policy: { retry: { max_attempts: 0 } }\n";
    std::fs::write(&path, text).expect("write providers");
    let args = ["--providers", path.to_str().unwrap_or_default()];
    let (code, stderr) = serve_config(&args, &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("webhook.policy.retry.max_attempts: 0 is out of range"),
        "{stderr}"
    );
    assert!(stderr.contains("line 4 column 36"), "{stderr}");

    // The defaults, written out, are accepted.
    let file = webhook_providers(
        "    timeout_ms: 10000\n    policy:\n      retry: { max_attempts: 4, base_delay: 200, \
         max_delay: 10000 }\n      rate_limit: { per_second: 100, burst: 100 }\n      \
         breaker: { failure_threshold: 5, cool_down: 30000 }\n",
    );
    let secret = [("BECKON_TEST_HOOK_SECRET", "whsec-limits")];
    let (code, stderr) = serve_config(&[], &secret, Some(&file));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn print_config_refuses_provider_secrets_and_urls_the_start_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "whsec-print\n").expect("write secret");
    let missing = dir.path().join("missing.secret");
    let providers = |url: &str, secret: &str| {
        format!(
            "providers:\n  channels: {{ webhook: webhook }}\n  webhook:\n    url: {url}\n    \
             secret: {secret}\n"
        )
    };
    let good_url = "http://127.0.0.1:9/hooks";
    let good_secret = format!("{{ file: {} }}", secret_file.display());
    let cases: &[(String, &[&str])] = &[
        (
            providers(good_url, "{ env: BECKON_TEST_SURELY_UNSET_HOOK_SECRET }"),
            &[
                "providers.webhook.secret:",
                "environment variable BECKON_TEST_SURELY_UNSET_HOOK_SECRET is not set",
            ],
        ),
        (
            providers(good_url, &format!("{{ file: {} }}", missing.display())),
            &[
                "providers.webhook.secret:",
                "missing.secret",
                "cannot read secret file",
            ],
        ),
        (
            providers("hooks.example.com/beckon", &good_secret),
            &["providers.webhook.url: not a URL"],
        ),
        (
            providers("ftp://hooks.example.com/beckon", &good_secret),
            &["providers.webhook.url: the scheme `ftp` cannot be used; expected http or https"],
        ),
    ];
    for (file, expected) in cases {
        let (code, stderr) = serve_config(&[], &[], Some(file));
        let case = format!("{file:?}: {stderr}");
        assert_eq!(code, Some(2), "{case}");
        for text in *expected {
            assert!(stderr.contains(text), "{case}");
        }
        assert!(!stderr.contains("panicked"), "{case}");
    }

    // The same settings with a readable secret and a usable URL print.
    let (code, stderr) = serve_config(&[], &[], Some(&providers(good_url, &good_secret)));
    assert_eq!(code, Some(0), "{stderr}");

    // Services that build no gateway start without the providers' secrets, and print so.
    let unset = providers(good_url, "{ env: BECKON_TEST_SURELY_UNSET_HOOK_SECRET }");
    let path = dir.path().join("beckon.yaml");
    std::fs::write(&path, unset).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "ingest", "--print-config", "--config"])
        .arg(&path)
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .output()
        .expect("beckon runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_an_eviction_period_shorter_than_hibernation() {
    // Each layer alone is in range; together they are not.
    let file = "hibernate_after_ms: 600000\n";
    let (code, stderr) = serve_config(&["--evict-after-ms", "60000"], &[], Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    // Each named as it was given: the flag, and the file's value with its place.
    assert!(stderr.contains("--evict-after-ms: 60000"), "{stderr}");
    assert!(
        stderr.contains("hibernate_after_ms (600000, at ") && stderr.contains("line 1 column 21)"),
        "{stderr}"
    );

    // Equal periods, and the defaults, are accepted.
    let (code, stderr) = serve_config(&["--evict-after-ms", "600000"], &[], Some(file));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = serve_config(&[], &[], None);
    assert_eq!(code, Some(0), "{stderr}");
}

/// `beckon serve <service>` with a messages file in a directory that does not exist: the
/// exit code and stderr, or a failure if the process is still serving after a minute.
fn serve_with_unwritable_messages_out(service: &str, path: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args([
            "serve",
            service,
            "--listen",
            "127.0.0.1:0",
            "--messages-out",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("beckon runs");

    // A process that accepted the path would serve until stopped: it is killed rather than
    // left running, and the test fails.
    let mut waited = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for beckon") {
            break status;
        }
        if waited >= 600 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("beckon serve {service} started with an unwritable --messages-out");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    };

    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn serve_refuses_a_messages_file_it_cannot_append_to_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing").join("sent.jsonl");
    for service in ["all", "gateway"] {
        let (code, stderr) = serve_with_unwritable_messages_out(service, &path);
        let case = format!("{service}: {stderr}");

        assert_ne!(code, 0, "{case}");
        assert!(stderr.contains("--messages-out"), "{case}");
        assert!(stderr.contains(&path.display().to_string()), "{case}");
        assert!(stderr.contains("No such file or directory"), "{case}");
        assert!(!stderr.contains("panicked"), "{case}");
    }
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn serve_refuses_tls_files_that_hold_no_certificate_or_key_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let key = dir.path().join("server.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let path = |p: &std::path::Path| p.display().to_string();

    let (code, stderr) = serve_config(&["--tls-ca", &path(&garbage)], &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-ca:") && stderr.contains("holds no PEM CERTIFICATE"),
        "{stderr}"
    );

    // A key given where the authorities go.
    let (code, stderr) = serve_config(&["--tls-ca", &path(&key)], &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-ca:"), "{stderr}");

    let missing = dir.path().join("missing.pem");
    let (code, stderr) = serve_config(&["--tls-ca", &path(&missing)], &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-ca: reading"), "{stderr}");

    // Certificate and key swapped.
    let args = ["--tls-cert", &path(&key), "--tls-key", &path(&garbage)];
    let (code, stderr) = serve_config(&args, &[], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-cert:") && stderr.contains("CERTIFICATE"),
        "{stderr}"
    );
}

#[test]
fn explain_refuses_a_blank_or_garbled_user_id_as_a_usage_error() {
    // The files are never read: the id is refused first.
    let cases = [
        ("", "only whitespace"),
        ("  ", "only whitespace"),
        ("ada\nbob", "contains a control character"),
    ];
    for (user, why) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["explain", user, "--events", "missing.jsonl"])
            .args(["--journeys", "missing"])
            .output()
            .expect("beckon runs");
        let stderr = String::from_utf8_lossy(&out.stderr);

        assert_eq!(out.status.code(), Some(2), "{user:?}: {stderr}");
        let said = format!("beckon explain: USER {user:?} is not a user id: {why}");
        assert_eq!(stderr.trim_end(), said, "{user:?}");
        assert!(out.stdout.is_empty(), "{user:?}");
    }
}

#[test]
fn serve_names_both_sides_of_settings_that_contradict_each_other() {
    let must = "users must hibernate before they leave memory, so it must be at least as long";

    // Both in the file: each with its line and column, the later one as the error's place.
    let file = "workspace: shop\nhibernate_after_ms: 5000\nevict_after_ms: 2000\n";
    let (code, stderr) = serve_config(&[], &[], Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    let said = format!(
        "beckon.yaml: evict_after_ms: 2000 is shorter than hibernate_after_ms (5000, at line 2 \
         column 21); {must} at line 3 column 17"
    );
    assert!(stderr.contains(&said), "{stderr}");

    // One from the environment, the other from the file.
    let file = "workspace: shop\nhibernate_after_ms: 5000\n";
    let env = [("BECKON_EVICT_AFTER_MS", "2000")];
    let (code, stderr) = serve_config(&[], &env, Some(file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: BECKON_EVICT_AFTER_MS: 2000 is shorter than hibernate_after_ms"),
        "{stderr}"
    );
    assert!(stderr.contains("beckon.yaml line 2 column 21)"), "{stderr}");

    // A flag against a variable, and against the default.
    let env = [("BECKON_HIBERNATE_AFTER_MS", "3000")];
    let (_, stderr) = serve_config(&["--evict-after-ms", "2000"], &env, None);
    let said = format!(
        "error: --evict-after-ms: 2000 is shorter than BECKON_HIBERNATE_AFTER_MS (3000); {must}"
    );
    assert!(stderr.contains(&said), "{stderr}");
    let (_, stderr) = serve_config(&["--evict-after-ms", "2000"], &[], None);
    assert!(
        stderr.contains("shorter than hibernate_after_ms (600000, the default)"),
        "{stderr}"
    );

    // A provider's retry cap below its first wait, in a flow mapping.
    let file = webhook_providers("    policy:\n      retry: { base_delay: 500, max_delay: 100 }\n");
    let (code, stderr) = serve_config(&[], &[], Some(&file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "beckon.yaml: providers.webhook.policy.retry.max_delay: 100 is shorter than \
             base_delay (500)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("at line 7 column 44 (retry.base_delay at line 7 column 28)"),
        "{stderr}"
    );
}

#[test]
fn serve_names_a_peer_url_from_the_environment_by_its_variable() {
    let env = [("BECKON_JOURNEYS_URL", "ftp://127.0.0.1:1")];
    let (code, stderr) = serve_config(&[], &env, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: BECKON_JOURNEYS_URL: `ftp://127.0.0.1:1`: the scheme must be"),
        "{stderr}"
    );
}

/// `beckon [--log FILTER] serve all ARGS` and the same with `--print-config`: exit code and
/// stderr of each. Every case here is refused before a port is taken; one that started would
/// be stopped and reported.
fn start_and_print(
    log: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> [(Option<i32>, String); 2] {
    [false, true].map(|print| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_beckon"));
        if let Some(filter) = log {
            command.args(["--log", filter]);
        }
        command.args(["serve", "all"]).args(args);
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if print {
            command.arg("--print-config");
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("beckon runs");
        for _ in 0..600 {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

#[test]
fn print_config_refuses_what_the_start_refuses_with_the_same_words() {
    /// `--log`, the serve flags, the environment, and words the refusal holds.
    type Case<'a> = (
        Option<&'a str>,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        &'a str,
    );
    let cases: &[Case<'_>] = &[
        (
            None,
            &["--listen", "nothost:abc"],
            &[],
            "--listen: \"nothost:abc\"",
        ),
        (None, &["--listen", "nothost"], &[], "no port"),
        (None, &["--admin-listen", ":9090"], &[], "--admin-listen"),
        (
            None,
            &["--redis-url", "redis://:pw@127.0.0.1:notaport/"],
            &[],
            "redis://:***@127.0.0.1:notaport/ is not valid",
        ),
        (
            Some("beckon=[[["),
            &[],
            &[],
            "invalid log filter \"beckon=[[[\"",
        ),
        (
            None,
            &[],
            &[("BECKON_LOG_FORMAT", "xml")],
            "BECKON_LOG_FORMAT: \"xml\"",
        ),
        (
            None,
            &["--messages-out", "/proc/nope/x.jsonl"],
            &[],
            "messages_out (--messages-out): cannot append to /proc/nope/x.jsonl",
        ),
    ];
    for (log, args, env, said) in cases {
        let [started, printed] = start_and_print(*log, args, env);
        let case = format!("{log:?} {args:?} {env:?}");
        assert_eq!(started.0, Some(2), "{case}: start: {}", started.1);
        assert_eq!(printed.0, Some(2), "{case}: --print-config: {}", printed.1);
        assert!(started.1.contains(said), "{case}: {}", started.1);
        assert_eq!(started.1, printed.1, "{case}");
        assert!(!printed.1.contains("pw@"), "{case}: the password is hidden");
    }
}

/// Checking a messages file that is not there yet leaves none behind, and one that is there
/// keeps what it holds.
#[test]
fn print_config_checks_the_messages_file_without_leaving_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("messages.jsonl");
    let path_arg = path.to_str().expect("utf-8 path");
    let print = || {
        Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["serve", "all", "--listen", "127.0.0.1:0", "--print-config"])
            .args(["--messages-out", path_arg])
            .output()
            .expect("beckon runs")
    };
    let out = print();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!path.exists(), "no messages file is left");

    std::fs::write(&path, "{}\n").expect("file");
    let out = print();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "{}\n");
}

/// Provider settings errors say what to write, in the file's own terms, at the value's line
/// and column.
#[test]
fn serve_explains_provider_settings_errors_in_plain_words() {
    let smtp = |port: &str, from: &str| {
        format!(
            "providers:\n  channels: {{ email: smtp }}\n  smtp:\n    host: 127.0.0.1\n    \
             port: {port}\n    security: none\n    from: \"{from}\"\n    \
             unsubscribe_url: http://127.0.0.1:9/u\n    \
             unsubscribe_secret: {{ env: BECKON_TEST_UNSUB_SECRET }}\n"
        )
    };
    let twilio = "providers:\n  channels: { sms: twilio }\n  twilio:\n    \
                  base_url: http://127.0.0.1:9\n    account_sid: AC123\n    \
                  auth_token: { env: BECKON_TEST_NOPE_UNSET }\n    from: \"+15555550100\"\n";
    let inline = "providers:\n  channels: { webhook: webhook }\n  webhook:\n    \
                  url: http://127.0.0.1:9/hooks\n    secret: \"inline-secret\"\n";
    let env = [("BECKON_TEST_UNSUB_SECRET", "s3cret")];
    let cases = [
        (
            inline.to_string(),
            "providers.webhook.secret: a string is not a secret reference; write \
             `{ file: PATH }` or `{ env: NAME }`: secrets are read from a file or an environment \
             variable, never written in the settings at line 5 column 13",
        ),
        (
            smtp("70000", "Shop <shop@example.com>"),
            "providers.smtp.port: 70000 is out of range; allowed 1..=65535 (a TCP \
             port, 1 to 65535) at line 5 column 11",
        ),
        (
            smtp("2525", "not an address"),
            "providers.smtp.from: \"not an address\" is not an email address; \
             expected an address such as `shop@example.com`, or a name and address such as \
             `Shop <shop@example.com>` at line 7 column 11",
        ),
        (
            twilio.to_string(),
            "providers.twilio.auth_token: environment variable \
             BECKON_TEST_NOPE_UNSET is not set at line 6 column 17",
        ),
    ];
    for (file, said) in cases {
        let (code, stderr) = serve_config(&[], &env, Some(&file));
        assert_eq!(code, Some(2), "{stderr}");
        // The file's path is the test's temporary folder; the rest is exact.
        let (head, rest) = stderr
            .trim_end()
            .split_once("/beckon.yaml: ")
            .unwrap_or_default();
        assert!(head.starts_with("error: "), "{stderr}");
        assert_eq!(rest, said, "{file}");
    }
}

#[test]
fn serve_refuses_a_workspace_no_client_could_name_naming_the_setting() {
    let rule = "expected 1 to 64 letters, digits, '-' or '_'";
    let long = "w".repeat(65);
    for bad in ["", "a}b:{c", "shop floor", long.as_str()] {
        let (code, stderr) = serve_config(&["--workspace", bad], &[], None);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
        assert_eq!(
            stderr.lines().last().unwrap_or_default(),
            format!("error: --workspace: {bad:?}: {rule}"),
            "{bad:?}"
        );

        let (code, stderr) = serve_config(&[], &[("BECKON_WORKSPACE", bad)], None);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
        assert!(
            stderr.contains(&format!("BECKON_WORKSPACE: {bad:?}: {rule}")),
            "{bad:?}: {stderr}"
        );
    }

    let (code, stderr) = serve_config(&[], &[], Some("partitions: 16\nworkspace: 'a}b'\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("workspace: \"a}}b\": {rule} at line 2 column 12")),
        "{stderr}"
    );

    let (code, stderr) = serve_config(&["--workspace", "shop-eu_1"], &[], None);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn serve_takes_a_lateness_limit_in_range_and_leaves_it_off_by_default() {
    let (code, stderr) = serve_config(&[], &[], None);
    assert_eq!(code, Some(0), "{stderr}");

    for value in ["0", "59999", "31536000001", "-1"] {
        let (code, stderr) = serve_config(&["--max-event-lateness-ms", value], &[], None);
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("--max-event-lateness-ms"),
            "{value}: {stderr}"
        );
        assert!(stderr.contains("60000..=31536000000"), "{value}: {stderr}");
    }
    let env = [("BECKON_MAX_EVENT_LATENESS_MS", "86400000")];
    let (code, stderr) = serve_config(&[], &env, None);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = serve_config(&[], &[], Some("max_event_lateness_ms: 5\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_event_lateness_ms"), "{stderr}");
    assert!(stderr.contains("60000..=31536000000"), "{stderr}");
    assert!(stderr.contains("line 1 column 24"), "{stderr}");
}

#[test]
fn journeys_refuses_specs_past_what_the_service_reads_by_their_size() {
    // A port of the test's own: the refusal must come before any connection.
    let own = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", own.local_addr().expect("address"));
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "x".repeat(17 * 1024 * 1024);
    let spec = format!(
        "id: big\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  - id: \
         hello\n    message:\n      channel: push\n      body: {body}\n"
    );
    std::fs::write(dir.path().join("big.yaml"), spec).expect("spec written");

    for action in ["lint", "apply"] {
        let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["journeys", action])
            .arg(dir.path())
            .args(["--url", &url])
            .output()
            .expect("beckon runs");
        let stderr = String::from_utf8_lossy(&out.stderr);

        assert_eq!(out.status.code(), Some(2), "{action}: {stderr}");
        assert!(
            stderr.contains("bytes the journey service reads in one call"),
            "{action}: {stderr}"
        );
        assert!(!stderr.contains("gRPC service"), "{action}: {stderr}");
    }
}
