//! The operator's queue commands (`queue show`, `delete`, `hold`, `release`, `flush --domain/--id`) on a
//! running relay (handed to it as requests) and on a stopped one (applied to the spool under the
//! state-directory lock): what is tried, what is never delivered, what survives a restart, and concurrent
//! commands.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Hop, Submit, message, scan, start_hop, start_relay, transport, wait_for};
use lettre::AsyncTransport;
use postern_relay::envelope::Envelope;

/// Writes the commands' configuration: the state directory of [`start_relay`] (`dir/state`).
fn cli_config(dir: &Path) {
    std::fs::write(dir.join("cli.toml"), "state_dir = \"state\"\n").unwrap();
}

/// Runs the binary in `dir` with the configuration of [`cli_config`], with a deadline: a command that
/// hangs fails the test.
fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", "cli.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// [`cli`] off the async runtime.
async fn cli_async(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&dir, &args)
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The queued envelope whose first recipient is `rcpt`.
fn queued(dir: &Path, rcpt: &str) -> Option<Envelope> {
    scan(dir)
        .messages
        .into_iter()
        .map(|m| m.envelope)
        .find(|e| e.recipients[0].address.to_string() == rcpt)
}

fn attempts(dir: &Path, rcpt: &str) -> u32 {
    queued(dir, rcpt).map_or(0, |e| e.attempts)
}

async fn submit(addr: std::net::SocketAddr, to: &str, subject: &str) {
    transport(addr, Submit::Plain)
        .send(message(to, subject))
        .await
        .unwrap();
}

/// Routes `a.test` and `b.test` to `port`, retrying after `backoff`; with `defer`, both require TLS (the
/// hop offers none, so every attempt is deferred 4.7.4 and the message stays queued).
fn routes(port: u16, defer: bool, backoff: &str) -> String {
    let mut toml = format!(
        "[queue]\nmin_backoff = \"{backoff}\"\nmax_backoff = \"{backoff}\"\n\
         [routes]\n\"a.test\" = \"127.0.0.1:{port}\"\n\"b.test\" = \"127.0.0.1:{port}\"\n"
    );
    if defer {
        toml.push_str("[tls.outbound]\ntls = \"encrypt\"\n");
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_running_relay_are_applied_by_it() {
    let dir = tempfile::tempdir().unwrap();
    cli_config(dir.path());
    let hop = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let relay = start_relay(dir.path(), &routes(hop.addr.port(), true, "1h")).await;
    let addr = relay.local_addrs()[0];
    submit(addr, "x@a.test", "first").await;
    submit(addr, "y@b.test", "second").await;
    submit(addr, "z@a.test", "third").await;
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "a first attempt each",
        |s| s.messages.len() == 3 && s.messages.iter().all(|m| m.envelope.attempts >= 1),
    )
    .await;
    let id = |rcpt: &str| queued(dir.path(), rcpt).unwrap().id.to_string();
    let (x, y, z) = (id("x@a.test"), id("y@b.test"), id("z@a.test"));

    // show: the envelope and the header, the body only when asked.
    let shown = assert_ok(&cli_async(dir.path(), &["queue", "show", &x]).await);
    for expected in [
        format!("message:      {x}\n"),
        "sender:       <alice@client.test>\n".to_owned(),
        "attempts:     1\n".to_owned(),
        "held:         no\n".to_owned(),
        "requiretls:   no\n".to_owned(),
        "  deferred   <x@a.test>\n".to_owned(),
        "last failure: 4.7.4".to_owned(),
        "-- header --\n".to_owned(),
        "Subject: first\r\n".to_owned(),
    ] {
        assert!(shown.contains(&expected), "{expected:?} not in:\n{shown}");
    }
    assert!(!shown.contains("Body of first"), "{shown}");
    let shown = assert_ok(&cli_async(dir.path(), &["queue", "show", "--body", &x]).await);
    assert!(shown.contains("-- body --\nBody of first"), "{shown}");

    // hold: a flush retries the others, not the held one.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "hold", &x]).await);
    assert_eq!(out, format!("{x}: held\n"));
    assert!(queued(dir.path(), "x@a.test").unwrap().held, "on disk");
    let out = assert_ok(&cli_async(dir.path(), &["queue", "list"]).await);
    assert!(out.contains("HELD"), "{out}");
    let out = assert_ok(&cli_async(dir.path(), &["queue", "flush"]).await);
    assert!(out.contains(&format!("{x}: held: not flushed")), "{out}");
    assert!(out.contains(&format!("{y}: due now")), "{out}");
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "the flushed ones retried",
        |_| attempts(dir.path(), "y@b.test") >= 2 && attempts(dir.path(), "z@a.test") >= 2,
    )
    .await;
    assert_eq!(attempts(dir.path(), "x@a.test"), 1, "held: not tried");

    // flush --domain: only that domain's message is retried.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "flush", "--domain", "B.test."]).await);
    assert_eq!(out, format!("{y}: due now\n"));
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "b.test retried",
        |_| attempts(dir.path(), "y@b.test") >= 3,
    )
    .await;
    // flush --id: only that message.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "flush", "--id", &y]).await);
    assert_eq!(out, format!("{y}: due now\n"));
    wait_for(dir.path(), Duration::from_secs(30), "y retried", |_| {
        attempts(dir.path(), "y@b.test") >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(attempts(dir.path(), "z@a.test"), 2, "a.test not flushed");
    assert_eq!(attempts(dir.path(), "x@a.test"), 1, "still held");

    // release: due at once, and tried.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "release", &x]).await);
    assert_eq!(out, format!("{x}: released: due now\n"));
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "the released one tried",
        |_| attempts(dir.path(), "x@a.test") >= 2,
    )
    .await;
    assert!(!queued(dir.path(), "x@a.test").unwrap().held);

    // delete: gone from the list and the spool.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "delete", &y]).await);
    assert_eq!(out, format!("{y}: deleted\n"));
    assert!(queued(dir.path(), "y@b.test").is_none());
    let queue = dir.path().join("state/spool/queue");
    assert!(!queue.join(format!("{y}.msg")).exists());
    assert!(!queue.join(format!("{y}.env")).exists());
    let out = assert_ok(&cli_async(dir.path(), &["queue", "list"]).await);
    assert!(!out.contains(&y), "{out}");

    // Unknown ids: a clear error and status 1; the known one is still acted on.
    let out = cli_async(dir.path(), &["queue", "hold", "NOSUCHID", &z]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("NOSUCHID: not queued\n{z}: held\n"));
    assert!(
        stderr(&out).contains("1 of 2 message(s) not held"),
        "{}",
        stderr(&out)
    );
    let out = cli_async(dir.path(), &["queue", "show", "NOSUCHID"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("message NOSUCHID is not queued"),
        "{}",
        stderr(&out)
    );
    let out = cli_async(dir.path(), &["queue", "delete", &y]).await;
    assert_eq!(out.status.code(), Some(1), "deleted already");

    // Concurrent commands: each answered, nothing corrupt, nothing left behind.
    let mut commands = Vec::new();
    for i in 0..6 {
        let action = ["hold", "release"][i % 2];
        let (dir, x, z) = (dir.path().to_owned(), x.clone(), z.clone());
        commands.push(std::thread::spawn(move || {
            cli(&dir, &["queue", action, &x, &z])
        }));
    }
    commands.push({
        let dir = dir.path().to_owned();
        std::thread::spawn(move || cli(&dir, &["queue", "flush"]))
    });
    for c in commands {
        assert_ok(&c.join().unwrap());
    }
    let s = scan(dir.path());
    assert!(s.corrupt.is_empty(), "{:?}", s.corrupt);
    assert_eq!(s.messages.len(), 2);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("state/spool/requests"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(hop.log.lock().unwrap().delivered.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_stopped_relay_act_on_the_spool_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    cli_config(dir.path());
    let hop = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    // First run: both messages deferred (TLS required, not offered), retried every second: due again
    // when the second run starts.
    let relay = start_relay(dir.path(), &routes(hop.addr.port(), true, "1s")).await;
    let addr = relay.local_addrs()[0];
    submit(addr, "kept@a.test", "kept").await;
    submit(addr, "gone@a.test", "gone").await;
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "a first attempt each",
        |s| s.messages.len() == 2 && s.messages.iter().all(|m| m.envelope.attempts >= 1),
    )
    .await;
    relay.shutdown().await;
    let first_run = Instant::now();
    let kept = queued(dir.path(), "kept@a.test").unwrap().id.to_string();
    let gone = queued(dir.path(), "gone@a.test").unwrap().id.to_string();

    // No relay runs: the command acts itself.
    let out = assert_ok(&cli_async(dir.path(), &["queue", "hold", &kept]).await);
    assert_eq!(out, format!("{kept}: held\n"));
    let out = assert_ok(&cli_async(dir.path(), &["queue", "hold", "--all"]).await);
    assert_eq!(
        out,
        format!("{kept}: already held\n{gone}: held\n"),
        "oldest first"
    );
    let out = assert_ok(&cli_async(dir.path(), &["queue", "delete", &gone]).await);
    assert_eq!(out, format!("{gone}: deleted\n"));
    let queue = dir.path().join("state/spool/queue");
    assert!(!queue.join(format!("{gone}.msg")).exists());
    assert!(!queue.join(format!("{gone}.env")).exists());
    let shown = assert_ok(&cli_async(dir.path(), &["queue", "show", &kept]).await);
    assert!(shown.contains("held:         yes"), "{shown}");
    let out = cli_async(dir.path(), &["queue", "release", "NOSUCHID"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "NOSUCHID: not queued\n");
    let out = cli_async(dir.path(), &["queue", "flush", "--id", "NOSUCHID"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("message NOSUCHID is not queued"));
    let out = assert_ok(&cli_async(dir.path(), &["queue", "flush"]).await);
    assert_eq!(
        out,
        "no relay is running: the flush is applied when it starts\n"
    );
    // The command released the state directory: a relay starts.

    // Second run: the hop would now accept (opportunistic TLS), the held message is due, and the flush is
    // applied at start.
    if let Some(rest) = Duration::from_secs(2).checked_sub(first_run.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert!(
        queued(dir.path(), "kept@a.test").unwrap().next_attempt <= std::time::SystemTime::now()
    );
    let relay = start_relay(dir.path(), &routes(hop.addr.port(), false, "1h")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hop.log.lock().unwrap().delivered.is_empty(),
        "held, deleted"
    );
    assert!(
        queued(dir.path(), "kept@a.test").unwrap().held,
        "held across the restart"
    );

    let out = assert_ok(&cli_async(dir.path(), &["queue", "release", &kept]).await);
    assert_eq!(out, format!("{kept}: released: due now\n"));
    wait_for(dir.path(), Duration::from_secs(30), "delivered", |s| {
        s.messages.is_empty()
    })
    .await;
    assert_eq!(hop.delivered_to("kept@a.test").len(), 1);
    assert!(
        hop.delivered_to("gone@a.test").is_empty(),
        "deleted: never delivered"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_message_being_delivered_removes_it_when_the_attempt_ends() {
    let dir = tempfile::tempdir().unwrap();
    cli_config(dir.path());
    // The hop takes 3 s to answer the final dot: the attempt is in progress meanwhile.
    let hop = start_hop(Hop::NoStartTls, Duration::from_secs(3)).await;
    let relay = start_relay(dir.path(), &routes(hop.addr.port(), false, "1h")).await;
    submit(relay.local_addrs()[0], "slow@a.test", "slow").await;
    let id = wait_for(dir.path(), Duration::from_secs(30), "queued", |s| {
        !s.messages.is_empty()
    })
    .await
    .messages[0]
        .envelope
        .id
        .to_string();
    let start = Instant::now();
    while hop.log.lock().unwrap().connections == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = assert_ok(&cli_async(dir.path(), &["queue", "delete", &id]).await);
    assert!(
        out.starts_with(&format!("{id}: deleted: a delivery attempt is in progress")),
        "{out}"
    );
    wait_for(dir.path(), Duration::from_secs(30), "removed", |s| {
        s.messages.is_empty()
    })
    .await;
    // Delivered once by the attempt in progress, never again, and nothing bounced.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(scan(dir.path()).messages.is_empty(), "no bounce queued");
    assert_eq!(hop.delivered_to("slow@a.test").len(), 1);
    relay.shutdown().await;
}
