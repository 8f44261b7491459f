//! Durability: a process receiving mail into the spool is killed with SIGKILL
//! at an arbitrary moment; after a restart every message it had committed
//! (that the SMTP layer would have acknowledged with 250) is queued, whole,
//! and nothing half-written is.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use postern_relay::envelope::{Envelope, MailParams, Mailbox, Recipient};
use postern_relay::queue::spool::Spool;

const CHILD_ENV: &str = "POSTERN_SPOOL_KILL_CHILD";

/// The content of message `n`: a header naming `n`, then a body whose
/// length varies with `n` (up to about 200 KB, written in 4 KB chunks).
fn content(n: u64) -> Vec<u8> {
    let mut c = format!("Subject: message {n}\r\n\r\n").into_bytes();
    let line = format!("line of message {n} ........................................\r\n");
    for _ in 0..(n * 7919 % 3000) {
        c.extend_from_slice(line.as_bytes());
    }
    c
}

/// Child process: receive messages forever, printing `ACK n` after each commit.
#[test]
#[ignore = "helper process for killed_receiver_loses_no_acknowledged_message"]
fn spool_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (spool, _) = Spool::open(dir).unwrap();
    let stdout = std::io::stdout();
    for n in 0u64.. {
        let env = Envelope::new(
            Mailbox::parse(&format!("sender{n}@example.org")).unwrap(),
            [Recipient::new(Mailbox::parse("rcpt@example.com").unwrap())],
            MailParams::default(),
            SystemTime::now(),
        );
        let mut incoming = spool.begin(env, None).unwrap();
        for chunk in content(n).chunks(4096) {
            incoming.write_chunk(chunk).unwrap();
        }
        incoming.commit().unwrap();
        let mut out = stdout.lock();
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_receiver_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spool_writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &spool_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let start = Instant::now();
    while acked.len() < 40 && start.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(n) = line.strip_prefix("ACK ") {
                    acked.push(n.parse::<u64>().unwrap());
                }
            }
            _ => break,
        }
    }
    // SIGKILL, at whatever point of a reception the child is.
    child.kill().unwrap();
    child.wait().unwrap();
    // ACKs printed before the kill but not yet read.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ACK ") {
            acked.push(n.parse::<u64>().unwrap());
        }
    }
    assert!(acked.len() >= 10, "the child made progress: {acked:?}");

    let (spool, recovery) = Spool::open(&spool_dir).unwrap();
    assert!(recovery.corrupt.is_empty(), "{:?}", recovery.corrupt);
    let recovered: Vec<u64> = recovery
        .messages
        .iter()
        .map(|e| {
            e.reverse_path
                .mailbox()
                .unwrap()
                .local_part()
                .trim_start_matches("sender")
                .parse()
                .unwrap()
        })
        .collect();
    for n in &acked {
        assert!(recovered.contains(n), "acknowledged message {n} lost");
    }
    // Committed messages are whole (at most one more than acknowledged: killed
    // between commit and the ACK line).
    assert!(recovered.len() <= acked.len() + 1);
    for (env, n) in recovery.messages.iter().zip(&recovered) {
        let mut got = Vec::new();
        spool
            .open_content(&env.id)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, content(*n), "message {n} intact");
    }
    assert_eq!(std::fs::read_dir(spool_dir.join("tmp")).unwrap().count(), 0);
}
