//! What the client commands (`beckon user`, `beckon journeys`) say when a call fails: a plain
//! reason and the server's message, under the command's name, with no gRPC code names and no
//! cause said twice; an address where something other than a Beckon service answered is named.

mod support;

use support::Served;

/// `beckon ARGS`: exit code and standard error.
fn beckon(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(args)
        .output()
        .expect("run beckon");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Nothing of tonic's own wording gets through.
fn assert_plain(said: &str) {
    for jargon in [
        "code: '",
        "The service is",
        "Operation is",
        "The system is",
        "message: ",
    ] {
        assert!(!said.contains(jargon), "{jargon:?} in {said}");
    }
}

#[test]
fn a_command_aimed_at_another_service_says_the_address_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("sent.jsonl");
    let gateway = Served::start(
        "gateway",
        &["--messages-out", out.to_str().unwrap_or_default()],
    );
    let url = gateway.url();
    let wrong = "that address does not serve this API (is it the right service's port?)";

    let (code, said) = beckon(&["user", "get", "ada", "--url", &url]);
    assert_eq!(code, Some(2), "{said}");
    assert_eq!(said.trim_end(), format!("beckon user get: {wrong}"));

    let (code, said) = beckon(&["journeys", "list", "--url", &url]);
    assert_eq!(code, Some(2), "{said}");
    assert_eq!(said.trim_end(), format!("beckon journeys list: {wrong}"));
}

#[test]
fn a_server_that_is_not_there_is_said_to_be_unavailable_once() {
    // A port of the test's own, closed again: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);

    let (code, said) = beckon(&["user", "get", "ada", "--url", &url]);
    assert_eq!(code, Some(2), "{said}");
    let said = said.trim_end();
    assert!(
        said.starts_with(&format!(
            "beckon user get: connecting to {url}: the server is unavailable: "
        )),
        "{said}"
    );
    assert_plain(said);
    assert_eq!(said.matches("tcp connect error").count(), 1, "{said}");
}

/// A plain HTTP/1.1 server on a port of the test's own, answering whatever arrives with
/// `400 Bad Request`, as a web server or a proxy's plain port would. Its URL.
fn http1_listener() -> String {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    url
}

#[test]
fn an_address_that_is_no_grpc_service_is_named_with_the_cause() {
    let url = http1_listener();
    let examples = support::examples();
    let examples = examples.to_str().unwrap_or_default();
    let said_of = |command: &str| {
        format!(
            "beckon {command}: {url} did not answer as a Beckon gRPC service (is it the right \
             address and scheme?): "
        )
    };

    // Every client command that calls a service goes through the same words.
    let commands: [(&str, Vec<&str>); 6] = [
        ("journeys list", vec!["journeys", "list"]),
        ("journeys apply", vec!["journeys", "apply", examples]),
        ("journeys lint", vec!["journeys", "lint", examples]),
        ("user get", vec!["user", "get", "ada"]),
        ("user members", vec!["user", "members", "buyers"]),
        ("user sizes", vec!["user", "sizes"]),
    ];
    for (command, mut args) in commands {
        args.extend(["--url", &url]);
        let (code, said) = beckon(&args);
        assert_eq!(code, Some(2), "{said}");
        let said = said.trim_end();
        let cause = said
            .strip_prefix(&said_of(command))
            .unwrap_or_else(|| panic!("{command}: {said}"));
        // The cause the connection broke with follows, in the transport's words.
        assert!(!cause.trim().is_empty(), "{said}");
        assert!(!said.contains("the server is unavailable"), "{said}");
        assert!(!said.contains("the server failed"), "{said}");
        assert_plain(said);
    }
}

#[test]
fn an_https_address_of_a_plain_text_port_is_said_to_be_one() {
    let url = http1_listener().replace("http://", "https://");
    for args in [vec!["journeys", "list"], vec!["user", "get", "ada"]] {
        let mut args = args.clone();
        args.extend(["--url", &url]);
        let (code, said) = beckon(&args);
        assert_eq!(code, Some(2), "{said}");
        assert!(
            said.contains(&format!(
                "{url} did not answer in TLS (is it a plain-text port? then its address starts \
                 with http://)"
            )),
            "{said}"
        );
        assert!(!said.contains("the server is unavailable"), "{said}");
        assert_plain(said.trim_end());
    }
}

#[test]
fn a_changed_published_version_is_refused_with_the_servers_reason_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::start("all", &[]);
    let url = served.url();
    let spec = dir.path().join("welcome.yaml");
    let journey = |body: &str| {
        format!(
            "id: welcome\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
             - id: hello\n    message:\n      channel: push\n      body: {body}\n"
        )
    };
    let path = spec.to_str().unwrap_or_default();

    std::fs::write(&spec, journey("Hello")).expect("write spec");
    let (code, said) = beckon(&["journeys", "apply", path, "--url", &url]);
    assert_eq!(code, Some(0), "{said}");

    // The same version with other content: refused by the server, said in its words.
    std::fs::write(&spec, journey("Hello again")).expect("write spec");
    let (code, said) = beckon(&["journeys", "apply", path, "--url", &url]);
    assert_eq!(code, Some(2), "{said}");
    let said = said.trim_end();
    assert_eq!(
        said,
        "beckon journeys apply: journey/welcome@1: journey welcome version 1 is already published \
         with other content; publish it as a new version"
    );
}

#[test]
fn sizes_refuses_an_argument_it_would_ignore() {
    // Refused before any call: no server is needed, and none is asked.
    let (code, said) = beckon(&["user", "sizes", "foo", "--url", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{said}");
    assert_eq!(
        said.trim_end(),
        "beckon user sizes: takes no segment or user, got \"foo\"; \
         `beckon user members SEGMENT` lists one segment"
    );
}
