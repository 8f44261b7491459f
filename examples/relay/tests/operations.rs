//! Running the relay as an operator does: one relay per state directory, commands piped into `head`, logs
//! written to files, the open-file limit.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Submit, ca, message, start_postern_hop, start_relay, transport};
use lettre::AsyncTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn relay_bin(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern-relay"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` with a deadline (the relay itself runs until signalled).
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?}; stderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Reads one (possibly multi-line) reply.
async fn reply(io: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    for _ in 0..100 {
        let mut l = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut l)).await;
        all.push_str(&l);
        if l.is_empty() || l.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    all
}

async fn command(io: &mut BufReader<TcpStream>, line: &str) -> String {
    io.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(io).await
}

/// A second relay on the same state directory stops before touching it: the first one's message in progress
/// is still acknowledged, and the error names the directory and the process holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_the_same_state_dir_stops_before_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), "").await;
    let addr = relay.local_addrs()[0];

    // A message in progress: its content is being written under spool/tmp.
    let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(reply(&mut c).await.starts_with("220 "));
    assert!(
        command(&mut c, "EHLO client.test\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        command(&mut c, "MAIL FROM:<a@client.test>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        command(&mut c, "RCPT TO:<postmaster@localhost>\r\n")
            .await
            .starts_with("250")
    );
    assert!(command(&mut c, "DATA\r\n").await.starts_with("354"));
    c.get_mut()
        .write_all(b"Subject: in progress\r\n\r\nfirst half\r\n")
        .await
        .unwrap();

    // The second relay: same state directory, same address.
    std::fs::write(
        dir.path().join("second.toml"),
        format!(
            "hostname = \"relay.test\"\nlisten = [\"{addr}\"]\nstate_dir = \"state\"\nallow_root = true\n\
             [certificates]\ndefault_rsa_bits = 2048\n"
        ),
    )
    .unwrap();
    let second = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            output_within(
                relay_bin(&dir, &["--config", "second.toml"]),
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "state directory state is in use by another postern-relay (pid {})",
            std::process::id()
        )),
        "{err}"
    );

    // The first relay's message in progress is intact.
    let r = command(&mut c, "second half\r\n.\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    assert!(command(&mut c, "QUIT\r\n").await.starts_with("221"));
    relay.shutdown().await;

    // Once the first relay has stopped, the directory is free again.
    let relay = start_relay(dir.path(), "").await;
    relay.shutdown().await;
}

/// A configuration in `dir/relay.toml` with a quick Default Cert, the state in `dir/state` (and root
/// allowed: CI runs the binary as root).
fn write_config(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "hostname = \"relay.test\"\nstate_dir = \"state\"\nlisten = [\"127.0.0.1:0\"]\nallow_root = true\n{extra}\n"
        ),
    )
    .unwrap();
}

/// `queue list | head`, `cert list --json | head`: a closed stdout ends the command quietly, with the status a
/// Unix tool stopped by SIGPIPE gets from the shell (141), never a panic.
#[test]
fn a_closed_stdout_ends_listing_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[certificates]\ndefault_rsa_bits = 2048\n");
    let (cert, key) = common::self_signed(&["relay.test"], false).write(dir.path(), "imported");
    let import = relay_bin(
        dir.path(),
        &[
            "--config",
            "relay.toml",
            "cert",
            "import",
            "--name",
            "mx",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));

    for args in [
        &["queue", "list"][..],
        &["queue", "list", "--json"],
        &["cert", "list"],
        &["cert", "list", "--json"],
        &["check-config"],
        &["policy", "explain", "example.com"],
    ] {
        // The reading end is closed before the command starts: its first write fails, whatever the timing.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = relay_bin(
            dir.path(),
            &[&["--config", "relay.toml"][..], args].concat(),
        )
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // check-config writes its summary on stderr; the listings write nothing there.
        if args[0] != "check-config" {
            assert!(err.is_empty(), "{args:?}: {err}");
        }
    }
}

/// The relay binary running, its stderr read line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        use std::io::BufRead as _;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    fn next_line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no log line within 60 s; so far: {:#?}", self.log));
        self.log.push(line.clone());
        line
    }

    /// Reads the log up to "relay started" (the listeners are bound first); the address the system chose.
    fn addr(&mut self) -> std::net::SocketAddr {
        let mut addr = None;
        loop {
            let line = self.next_line();
            if let Some(at) = line.find("listening") {
                let port: String = line[at..]
                    .split("127.0.0.1:")
                    .nth(1)
                    .unwrap_or_default()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
            }
            if line.contains("relay started") {
                return addr.expect("a listening line before \"relay started\"");
            }
        }
    }

    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
    }
}

/// Log lines written to a file or a pipe carry no ANSI colour escapes, and the operator reads words, not Rust
/// debug output: a refused certificate is described by its names, the retry delay in the configuration's units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_are_plain_readable_text() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    let hop = start_postern_hop(Some(&ca().leaf(&["a.example", "b.example"], false, -1, 90))).await;
    write_config(
        dir.path(),
        &format!(
            "[routes]\n\"wrong.test\" = \"127.0.0.1:{}\"\n\
             [tls.outbound.domains.\"wrong.test\"]\ntls = \"verify\"\n\
             [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"ca.pem\"\n",
            hop.addr.port()
        ),
    );
    let mut relay = Running::start(relay_bin(dir.path(), &["--config", "relay.toml"]));
    let addr = relay.addr();
    transport(addr, Submit::Plain)
        .send(message("user@wrong.test", "wrong name"))
        .await
        .unwrap();
    while !relay.next_line().contains("retry_in") {}
    let log = relay.stop();

    let all = log.join("\n");
    assert!(
        !all.contains('\x1b'),
        "ANSI escapes in a log written to a pipe:\n{all}"
    );
    let handshake = log
        .iter()
        .find(|l| l.contains("TLS handshake failed"))
        .unwrap_or_else(|| panic!("no handshake line:\n{all}"));
    assert!(
        handshake.contains(
            "error=invalid peer certificate: certificate name mismatch: expected \
             wrong.test, certificate names a.example, b.example"
        ),
        "{handshake}"
    );
    assert!(!all.contains("OtherError"), "{all}");
    let deferred = log.iter().find(|l| l.contains("retry_in")).unwrap();
    assert!(deferred.contains("retry_in=5m"), "{deferred}");
}

/// The relay (`--config relay.toml` in `dir`) started with the open-file limit `soft:hard` (util-linux
/// `prlimit`, which sets it and executes the relay).
fn under_prlimit(dir: &Path, nofile: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}"))
        .arg(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", "relay.toml"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    cmd
}

/// Under a low open-file limit, the relay raises its soft limit to the hard limit, and serves no more
/// connections than fit: past them a client gets `421 4.3.2`, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_kept_within_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "max_connections = 5000\n[certificates]\ndefault_rsa_bits = 2048\n",
    );

    // Soft 128, hard 4096: raised to 4096, in which 5000 connections still do not fit.
    let mut relay = Running::start(under_prlimit(dir.path(), "128:4096"));
    relay.addr();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    let log = relay.stop();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
    let all = log.join("\n");
    assert!(all.contains("open-file limit raised"), "{all}");
    assert!(
        all.contains(
            "max_connections = 5000 does not fit in the open-file limit 4096 (hard limit 4096): \
             serving 1995 connections"
        ),
        "{all}"
    );

    // Soft and hard 256: 75 connections fit; the 76th is told 421 at once.
    let mut relay = Running::start(under_prlimit(dir.path(), "256:256"));
    let addr = relay.addr();
    let mut held = Vec::new();
    for i in 0..75 {
        let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let r = reply(&mut c).await;
        assert!(r.starts_with("220 "), "connection {i}: {r}");
        held.push(c);
    }
    let mut over = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let r = reply(&mut over).await;
    assert!(r.starts_with("421 4.3.2 "), "{r}");
    drop(held);
    let all = relay.stop().join("\n");
    assert!(
        all.contains("max_connections = 5000 does not fit in the open-file limit 256 (hard limit 256): serving 75 connections"),
        "{all}"
    );
    assert!(!all.contains("accept failed"), "{all}");
}
