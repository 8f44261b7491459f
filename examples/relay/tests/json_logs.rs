//! `log_format = "json"`: every line the relay writes is one JSON object with the documented fields
//! (`timestamp`, `level`, `target`, `message`, the event's own fields at the top level).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stop;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The `listening` event's address, once the relay logged it.
fn listening(log: &std::path::Path) -> SocketAddr {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["message"] == "listening"
                && let Some(addr) = v["local"].as_str().and_then(|a| a.parse().ok())
            {
                return addr;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "relay did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session refused under "require": MAIL before STARTTLS, then QUIT.
async fn refused_session(addr: SocketAddr) {
    let mut io = BufReader::new(TcpStream::connect(addr).await.unwrap());
    for line in ["", "EHLO client.test", "MAIL FROM:<a@client.test>", "QUIT"] {
        if !line.is_empty() {
            io.get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
        // Bounded: these replies have a few lines.
        for _ in 0..20 {
            let mut l = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut l)).await;
            if !matches!(n, Ok(Ok(1..))) || l.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    }
}

#[test]
fn every_line_is_one_object_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        "listen = [\"127.0.0.1:0\"]\nstate_dir = \"state\"\nlog_format = \"json\"\n\
         [certificates]\ndefault_rsa_bits = 2048\n[tls.inbound]\ntls = \"require\"\n",
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", "relay.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = listening(&log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(refused_session(addr));
    // The disconnect line comes once the session is over.
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("disconnect from") || start.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {e}: {l}"))
        })
        .collect();
    assert!(lines.len() >= 4, "{text}");
    for v in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v[field].is_string(), "no {field}: {v}");
        }
    }
    let message = |needle: &str| {
        lines
            .iter()
            .find(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {text}"))
    };
    let reject = message("NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 530 5.7.0");
    assert_eq!(reject["level"], "INFO", "{reject}");
    let disconnect = message("disconnect from unknown[127.0.0.1]");
    assert!(
        disconnect["id"].is_u64(),
        "the connection number as a field: {disconnect}"
    );
    assert!(
        message("relay stopped")["timestamp"]
            .as_str()
            .unwrap()
            .contains('T')
    );
}
