//! A configuration reload (SIGHUP, `postern-relay reload`, `Relay::reload`): checked completely before
//! anything changes, new sessions under the new configuration, sessions in progress under the one they started
//! with, nothing dropped — also under load.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{relay_config, scan, start_relay, stop};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every test ends within this time.
const LIMIT: Duration = Duration::from_secs(60);

/// Inbound "require", spoken as the configuration file does.
const REQUIRE: &str = "[tls.inbound]\ntls = \"require\"\n";

/// A plaintext SMTP session, read line by line.
struct Session(BufReader<TcpStream>);

impl Session {
    async fn open(addr: SocketAddr) -> Self {
        let mut s = Self(BufReader::new(TcpStream::connect(addr).await.unwrap()));
        let greeting = s.say("").await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        s
    }

    /// Sends `line` (none if empty) and returns the whole reply.
    async fn say(&mut self, line: &str) -> String {
        if !line.is_empty() {
            self.0
                .get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
        let mut reply = String::new();
        for _ in 0..100 {
            let mut l = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.0.read_line(&mut l)).await;
            if !matches!(read, Ok(Ok(1..))) {
                break;
            }
            reply.push_str(&l);
            if l.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
        reply
    }

    /// One message to `to` in this session; the reply to its final dot.
    async fn send(&mut self, to: &str, subject: &str) -> String {
        for (cmd, want) in [
            ("MAIL FROM:<alice@client.test>".to_owned(), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            let r = self.say(&cmd).await;
            if !r.starts_with(want) {
                return r;
            }
        }
        self.say(&format!("Subject: {subject}\r\n\r\nbody\r\n."))
            .await
    }
}

/// The MAIL reply a new plaintext session gets.
async fn mail_reply(addr: SocketAddr) -> String {
    let mut s = Session::open(addr).await;
    s.say("EHLO client.test").await;
    let r = s.say("MAIL FROM:<alice@client.test>").await;
    s.say("QUIT").await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_get_the_new_configuration_and_open_ones_keep_theirs() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        // Mail for local.test stays queued (no route is reachable): what is queued is what was accepted.
        let base =
            "accepted_domains = [\"local.test\"]\n[routes]\n\"local.test\" = \"[127.0.0.1]:9\"\n";
        let relay = start_relay(dir.path(), base).await;
        let addr = relay.local_addrs()[0];
        assert!(mail_reply(addr).await.starts_with("250"));

        // A session opened under "offer" ...
        let mut open = Session::open(addr).await;
        open.say("EHLO client.test").await;

        let reloaded = relay
            .reload(relay_config(dir.path(), &format!("{base}{REQUIRE}")))
            .await
            .unwrap();
        assert!(reloaded.restart_needed.is_empty(), "{reloaded:?}");
        // ... new sessions are under "require" ...
        let refused = mail_reply(addr).await;
        assert!(refused.starts_with("530 5.7.0"), "{refused}");
        // ... the open one finishes under "offer", and its message is kept.
        let done = open.send("bob@local.test", "kept").await;
        assert!(done.starts_with("250 2.0.0 Ok: queued as"), "{done}");
        open.say("QUIT").await;
        assert_eq!(scan(dir.path()).messages.len(), 1);

        // A configuration that cannot be used (a CA bundle that does not exist) is refused whole: the relay
        // goes on under the one in force, which still says "require".
        let broken = format!(
            "{base}[certificates]\ndefault_rsa_bits = 2048\nca_bundle = \"{}\"\n",
            dir.path().join("missing.pem").display()
        );
        let err = relay
            .reload(relay_config(dir.path(), &broken))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(mail_reply(addr).await.starts_with("530 5.7.0"));

        // Back to "offer"; and the settings read only at start are named, and keep their running values.
        let moved = relay_config(dir.path(), base);
        let mut moved = moved;
        moved.listen = vec!["127.0.0.1:1".parse().unwrap()];
        let reloaded = relay.reload(moved).await.unwrap();
        assert_eq!(reloaded.restart_needed, vec!["listen"]);
        assert_eq!(
            relay.config().listen,
            vec!["127.0.0.1:0".parse::<SocketAddr>().unwrap()]
        );
        assert!(mail_reply(addr).await.starts_with("250"));
        relay.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// Clients send without pause while the configuration is reloaded again and again (the inbound limits and
/// the accepted domains change each time, every version accepting the clients' mail): every message gets its
/// `250`, and every one is in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_and_refuses_nothing() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 25;
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let version = |n: usize| {
            format!(
                "accepted_domains = [\"local.test\", \"v{n}.test\"]\nmax_recipients = {}\n\
                 [routes]\n\"local.test\" = \"[127.0.0.1]:9\"\n",
                100 + n
            )
        };
        let relay = Arc::new(start_relay(dir.path(), &version(0)).await);
        let addr = relay.local_addrs()[0];
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let accepted = Arc::clone(&accepted);
            clients.push(tokio::spawn(async move {
                // Several messages per session, and several sessions: both straddle reloads.
                let mut s = Session::open(addr).await;
                s.say("EHLO client.test").await;
                for m in 0..PER_CLIENT {
                    if m % 5 == 4 {
                        s.say("QUIT").await;
                        s = Session::open(addr).await;
                        s.say("EHLO client.test").await;
                    }
                    let r = s.send("bob@local.test", &format!("c{c} m{m}")).await;
                    assert!(r.starts_with("250 2.0.0"), "client {c} message {m}: {r}");
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                s.say("QUIT").await;
            }));
        }
        let start = Instant::now();
        let mut reloads = 0;
        while accepted.load(Ordering::SeqCst) < CLIENTS * PER_CLIENT
            && start.elapsed() < Duration::from_secs(40)
        {
            reloads += 1;
            relay
                .reload(relay_config(dir.path(), &version(reloads)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), CLIENTS * PER_CLIENT);
        assert!(reloads >= 3, "only {reloads} reloads during the load");
        assert_eq!(scan(dir.path()).messages.len(), CLIENTS * PER_CLIENT);
        assert!(
            relay
                .config()
                .accepted_domains
                .contains(&format!("v{reloads}.test"))
        );
        let relay = Arc::into_inner(relay).expect("no other owner");
        relay.shutdown().await;
    })
    .await
    .expect("bounded");
}

fn relay_bin(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern-relay"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Waits for the relay started in `dir` to listen; its address.
fn listening(log: &Path) -> SocketAddr {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("listening"))
            .and_then(|l| l.split("local=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            return addr;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "relay did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binary: `postern-relay reload` makes the running relay read its file again and reports the outcome —
/// the new configuration in force, or the error that kept the running one (exit status 1).
#[test]
fn reload_command_reports_what_the_running_relay_did() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    // `allow_root`: CI runs the binary as root.
    let base = "listen = [\"127.0.0.1:0\"]\nstate_dir = \"state\"\nallow_root = true\n[certificates]\ndefault_rsa_bits = 2048\n";
    std::fs::write(&file, base).unwrap();
    let log = dir.path().join("relay.log");
    let child = relay_bin(dir.path(), &["--config", "relay.toml"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = listening(&log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(mail_reply(addr)).starts_with("250"));

    std::fs::write(&file, format!("{base}{REQUIRE}")).unwrap();
    let out = relay_bin(dir.path(), &["--config", "relay.toml", "reload"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded: the relay (pid"), "{stdout}");
    let refused = rt.block_on(mail_reply(addr));
    assert!(refused.starts_with("530 5.7.0"), "{refused}");

    // A file that does not parse: the command says so and does not signal.
    std::fs::write(
        &file,
        format!("{base}{REQUIRE}client_certificates = \"sometimes\"\n"),
    )
    .unwrap();
    let out = relay_bin(dir.path(), &["--config", "relay.toml", "reload"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sometimes"), "{stderr}");
    // A file that parses but that the relay cannot use (a CA bundle that does not exist): the relay refuses
    // it, the command fails with the reason, and "require" stays.
    std::fs::write(&file, format!("{base}ca_bundle = \"missing.pem\"\n")).unwrap();
    let out = relay_bin(dir.path(), &["--config", "relay.toml", "reload"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kept its running configuration") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    assert!(rt.block_on(mail_reply(addr)).starts_with("530 5.7.0"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("configuration reload refused"), "{text}");

    stop(child);
    // No relay any more: nothing to reload, said plainly.
    let out = relay_bin(dir.path(), &["--config", "relay.toml", "reload"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no relay is running"));
}
