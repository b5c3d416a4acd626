//! `--log` sets the log filter of a service as `BECKON_LOG` does, and wins over it.

mod support;

use support::Served;

#[test]
fn the_log_flag_quiets_a_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = dir.path().join("quiet.log");
    let chatty = dir.path().join("chatty.log");

    // Served sets BECKON_LOG=info; the flag overrides it.
    let mut served = Served::start_with("all", &["--log", "error"], &[], Some(&quiet));
    assert!(served.terminate().success());
    let mut served = Served::start_with("all", &[], &[], Some(&chatty));
    assert!(served.terminate().success());

    let quiet = std::fs::read_to_string(&quiet).expect("read log");
    let chatty = std::fs::read_to_string(&chatty).expect("read log");
    assert!(!quiet.contains("INFO"), "{quiet}");
    assert!(
        chatty.contains("INFO"),
        "without the flag the environment's info applies"
    );
}
