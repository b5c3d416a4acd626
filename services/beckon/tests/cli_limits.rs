//! Command-line values outside what the process can honour are refused by name before any
//! work starts, instead of failing halfway (too many threads, open files).

use std::process::Command;

#[test]
fn replay_refuses_a_worker_count_out_of_range_naming_the_flag() {
    for workers in ["0", "257", "100000"] {
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
