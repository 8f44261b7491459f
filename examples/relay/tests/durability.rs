//! Durability: the relay process is killed with SIGKILL while it receives and delivers; after a restart every
//! message it acknowledged with 250 is delivered (at least once). The final stop is a graceful SIGTERM.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Hop, Submit, message, start_hop, transport};
use lettre::AsyncTransport;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "relay did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_receiving_and_delivering_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    // The next hop takes 30 ms per message, so deliveries are in flight when the relay is killed.
    let sink = start_hop(Hop::NoStartTls, Duration::from_millis(30)).await;
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nstate_dir = \"{}\"\ndelivery_workers = 4\nallow_root = true\n\
             [queue]\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nscan_interval = \"1s\"\n\
             [timeouts]\nshutdown_grace = \"2s\"\n\
             [routes]\n\"dest.test\" = \"127.0.0.1:{}\"\n\
             [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n",
            dir.path().join("state").display(),
            sink.addr.port()
        ),
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut child = spawn(&config, &log);
    wait_listening(addr).await;

    let acked = Arc::new(Mutex::new(Vec::<u32>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let subject = format!("msg-{n}");
                if transport(addr, Submit::Plain)
                    .send(message(&format!("user{n}@dest.test"), &subject))
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().push(n);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n += 1;
            }
        })
    };

    for round in 1..=2 {
        let target = round * 15;
        let start = Instant::now();
        while acked.lock().unwrap().len() < target {
            assert!(start.elapsed() < Duration::from_secs(60), "sending stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        child = spawn(&config, &log);
        wait_listening(addr).await;
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 40 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "sending stalled after restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let start = Instant::now();
    loop {
        let delivered: Vec<String> = sink
            .log
            .lock()
            .unwrap()
            .delivered
            .iter()
            .map(|d| String::from_utf8_lossy(&d.content).into_owned())
            .collect();
        let missing: Vec<u32> = acked
            .iter()
            .copied()
            .filter(|n| {
                !delivered
                    .iter()
                    .any(|c| c.contains(&format!("Subject: msg-{n}\r\n")))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "acknowledged but never delivered: {missing:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything delivered: the queue empties.
    common::wait_for(dir.path(), Duration::from_secs(30), "an empty queue", |s| {
        s.messages.is_empty()
    })
    .await;

    // Graceful stop on SIGTERM: exit status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("shutdown requested") && text.contains("relay stopped"),
        "{text}"
    );
}
