//! The `postern-relay` binary: configuration checks, queue listing and flush,
//! start-up recovery, exit statuses.

use std::path::Path;
use std::process::{Command, Output};

fn relay(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_accepts_defaults_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = relay(dir.path(), &["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("listen = [\"127.0.0.1:2525\"]"),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "[queue]\nmax_lifetime = \"forever\"\n",
    )
    .unwrap();
    let out = relay(dir.path(), &["--config", "bad.toml", "check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("queue.max_lifetime"),
        "{err}"
    );

    let out = relay(dir.path(), &["--config", "missing.toml", "check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"));
}

#[test]
fn run_recovers_the_spool_and_queue_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), "state_dir = \"state\"\n").unwrap();
    let cfg = ["--config", "relay.toml"];

    let out = relay(dir.path(), &[&cfg[..], &["queue", "list"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Mail queue is empty\n");

    // Running creates and recovers the spool; a leftover partial message is removed.
    std::fs::create_dir_all(dir.path().join("state/spool/tmp/PARTIAL")).unwrap();
    let out = relay(dir.path(), &cfg);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("removed incomplete messages"), "{err}");
    assert!(err.contains("spool recovered"), "{err}");
    assert!(!dir.path().join("state/spool/tmp/PARTIAL").exists());

    let out = relay(
        dir.path(),
        &[&cfg[..], &["queue", "list", "--json"]].concat(),
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(0));

    let out = relay(dir.path(), &[&cfg[..], &["queue", "flush"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("state/spool/flush").exists());
}

#[test]
fn queue_flush_without_a_spool_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = relay(dir.path(), &["queue", "flush"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("postern-relay: error:"));
}
