//! The relay as a service: started as root with `user`, it binds its port, switches to that user
//! (checked in /proc) and everything in its state directory, a message accepted over SMTP included,
//! belongs to that user; as root without `user` or `allow_root` it refuses to start; under systemd
//! (`NOTIFY_SOCKET`) it says READY=1 once it listens, RELOADING=1 / READY=1 on SIGHUP and STOPPING=1
//! on SIGTERM.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User};

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory that any user may enter (`tempdir` makes 0700 ones).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nstate_dir = {:?}\n{extra}\n\
             [routes]\n\"example.net\" = \"127.0.0.1:1\"\n\
             [certificates]\ndefault_rsa_bits = 2048\n",
            dir.join("state"),
        ),
    )
    .unwrap();
    path
}

/// A notification socket the relay (whatever its user) can write to.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    (socket, path)
}

fn spawn(config: &Path, notify: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The next notification; fails after [`WAIT`] (the relay's log in the message).
fn next_notification(socket: &UnixDatagram, log: &Path) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification ({e}); relay log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for the child to exit, killing it after [`WAIT`].
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the relay did not stop within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One SMTP reply (its last line), read within [`WAIT`].
fn reply(reader: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.len() >= 4, "short reply {line:?}");
        if line.as_bytes()[3] == b' ' {
            return line;
        }
    }
}

/// Sends one message to the relay; returns the reply to the end of data.
fn send_message(port: u16) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    assert!(reply(&mut reader).starts_with("220"));
    for (command, code) in [
        ("EHLO client.test", "250"),
        ("MAIL FROM:<alice@localhost>", "250"),
        ("RCPT TO:<bob@example.net>", "250"),
        ("DATA", "354"),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let r = reply(&mut reader);
        assert!(r.starts_with(code), "{command}: {r}");
    }
    writer
        .write_all(b"Subject: owned\r\n\r\nhello\r\n.\r\n")
        .unwrap();
    let r = reply(&mut reader);
    writer.write_all(b"QUIT\r\n").unwrap();
    r
}

/// The `Uid:`/`Gid:`/`Groups:` fields of /proc/PID/status.
fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Every entry under `dir` with its owner.
fn owners(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.uid()));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn skip_unless_root(test: &str) -> bool {
    if Uid::effective().is_root() {
        false
    } else {
        eprintln!("skipped {test}: it needs root (to start the relay as root and see it switch)");
        true
    }
}

#[test]
fn as_root_with_user_it_binds_then_runs_as_that_user() {
    if skip_unless_root("as_root_with_user_it_binds_then_runs_as_that_user") {
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("user nobody");
    let dir = open_tempdir();
    // Left by an earlier run as root: given to the user at start.
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("mta-sts")).unwrap();
    std::fs::write(state.join("mta-sts/old"), b"x").unwrap();
    // Links the user could have planted to files of root's: never followed, never given.
    let (outside, linked) = (dir.path().join("outside"), dir.path().join("linked"));
    std::fs::write(&outside, b"root's").unwrap();
    std::fs::write(&linked, b"root's").unwrap();
    std::os::unix::fs::symlink(&outside, state.join("mta-sts/symlink")).unwrap();
    std::os::unix::fs::symlink(dir.path(), state.join("dir-symlink")).unwrap();
    std::fs::hard_link(&linked, state.join("hard")).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "user = \"nobody\"");
    let (socket, notify) = notify_socket(dir.path());
    let log = dir.path().join("relay.log");
    let mut child = spawn(&config, &notify, &log);
    assert_eq!(next_notification(&socket, &log), "READY=1\n");

    let uids = status_ids(child.id(), "Uid:");
    let gids = status_ids(child.id(), "Gid:");
    assert_eq!(uids, [nobody.uid.as_raw(); 4], "real, effective, saved, fs");
    assert_eq!(gids, [nobody.gid.as_raw(); 4]);
    assert!(!status_ids(child.id(), "Groups:").contains(&0));

    let r = send_message(port);
    assert!(r.starts_with("250"), "{r}");
    for planted in [&outside, &linked, dir.path()] {
        assert_eq!(
            std::fs::metadata(planted).unwrap().uid(),
            0,
            "{}",
            planted.display()
        );
    }
    for planted in ["mta-sts/symlink", "dir-symlink", "hard"] {
        std::fs::remove_file(state.join(planted)).unwrap();
    }
    let entries = owners(&state);
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.starts_with(state.join("spool/queue")) && p.is_file()),
        "the message is queued: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.ends_with("certs/default-rsa.key.pem")),
        "{entries:?}"
    );
    for (path, uid) in &entries {
        assert_eq!(
            *uid,
            nobody.uid.as_raw(),
            "{} owned by {uid}",
            path.display()
        );
    }

    signal(&child, "-TERM");
    assert_eq!(next_notification(&socket, &log), "STOPPING=1\n");
    assert!(wait_exit(&mut child).success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("switched to the relay's user"), "{log}");
}

#[test]
fn as_root_without_user_it_refuses_to_start() {
    if skip_unless_root("as_root_without_user_it_refuses_to_start") {
        return;
    }
    let dir = open_tempdir();
    // A network address (refused before anything is bound); on loopback only it would run, with a warning.
    let config = write_config(dir.path(), free_port(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("listen = [\"127.0.0.1:", "listen = [\"192.0.2.1:"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to run as root on a network address"),
        "{err}"
    );
    assert!(err.contains("allow_root = true"), "{err}");
    assert!(
        !dir.path().join("state").exists(),
        "nothing written before refusing"
    );
}

#[test]
fn tells_the_service_manager_ready_reloading_and_stopping() {
    let dir = open_tempdir();
    let port = free_port();
    // As root (CI), on purpose: this test is about the notifications.
    let config = write_config(dir.path(), port, "allow_root = true");
    let (socket, notify) = notify_socket(dir.path());
    let log = dir.path().join("relay.log");
    let mut child = spawn(&config, &notify, &log);
    assert_eq!(next_notification(&socket, &log), "READY=1\n");
    // Ready means listening.
    TcpStream::connect(("127.0.0.1", port)).unwrap();

    signal(&child, "-HUP");
    let reloading = next_notification(&socket, &log);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next_notification(&socket, &log), "READY=1\n");

    signal(&child, "-TERM");
    assert_eq!(next_notification(&socket, &log), "STOPPING=1\n");
    assert!(wait_exit(&mut child).success());
}
