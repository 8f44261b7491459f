//! The offline DNSSEC lab on loopback: nsd serving zones signed with
//! ldns-signzone and unbound validating them, started by
//! `crates/postern-dns/tests/lab/setup.sh` (which documents the zone tree).
//!
//! It needs the Debian packages in [`PACKAGES`]. When they are missing,
//! [`DnsLab::start`] installs them if it runs as root, panics if `CI` is set,
//! and otherwise returns `None` after printing why (the caller skips).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Debian packages the lab needs.
pub const PACKAGES: [&str; 4] = ["nsd", "ldnsutils", "unbound", "bind9-dnsutils"];
const TOOLS: [&str; 5] = ["nsd", "ldns-signzone", "ldns-keygen", "unbound", "dig"];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn missing_tools() -> Vec<&'static str> {
    TOOLS.into_iter().filter(|t| !have(t)).collect()
}

fn apt_install() -> bool {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    install()
        || (Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && install())
}

/// Whether the lab's tools are there (installing them as root); `false`
/// means skip. Asked once per process.
///
/// # Panics
/// Under `CI` when they are missing.
pub fn tools_ready() -> bool {
    static CHECKED: Mutex<Option<bool>> = Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ready) = *checked {
        return ready;
    }
    let mut missing = missing_tools();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !missing.is_empty() && root {
        eprintln!("lab: installing {}", PACKAGES.join(" "));
        apt_install();
        missing = missing_tools();
    }
    let ready = missing.is_empty();
    if !ready {
        let message = format!(
            "lab: missing {} (Debian packages: {}); the DNSSEC lab tests need them",
            missing.join(", "),
            PACKAGES.join(" ")
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}: SKIPPED");
    }
    *checked = Some(ready);
    ready
}

/// A loopback port free for both UDP and TCP at the time of asking.
///
/// # Panics
/// If no UDP socket can be bound on loopback.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What a caller adds to the lab (see setup.sh).
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// `LAB_EXTRA_ZONES`: a directory of `NAME.zone` files (signed and
    /// delegated with DS) and `NAME.unsigned.zone` files (delegated without).
    pub extra_zones: Option<PathBuf>,
    /// `LAB_UNBOUND_EXTRA`: a file appended to unbound.conf.
    pub unbound_extra: Option<PathBuf>,
    /// Stop the daemons and remove the run directory when this process
    /// ends, dropped or not (for a lab held in a `static`).
    pub stop_with_process: bool,
}

/// A running lab; the daemons are stopped when it is dropped.
#[derive(Debug)]
pub struct DnsLab {
    dir: tempfile::TempDir,
    /// nsd, authoritative for every zone of the lab.
    pub nsd: SocketAddr,
    /// unbound, validating from the lab's trust anchor (sets AD).
    pub unbound: SocketAddr,
    /// The trust anchor (`test.`), a file of one DNSKEY record.
    pub trust_anchor: PathBuf,
    /// The zones added through [`LabOptions::extra_zones`].
    pub extra_zones: Vec<String>,
    pids: Vec<u32>,
}

impl DnsLab {
    /// The lab with its own zones only; `None` when its tools are missing
    /// (see [`tools_ready`]).
    pub fn start() -> Option<Self> {
        Self::start_with(&LabOptions::default())
    }

    /// The lab with `options`; `None` when its tools are missing.
    ///
    /// # Panics
    /// If setup.sh fails (its output is in the message).
    pub fn start_with(options: &LabOptions) -> Option<Self> {
        if !tools_ready() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../postern-dns/tests/lab/setup.sh");
        let nsd_port = free_port();
        let unbound_port = loop {
            let p = free_port();
            if p != nsd_port {
                break p;
            }
        };
        let started = Instant::now();
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .arg(dir.path())
            .arg(nsd_port.to_string())
            .arg(unbound_port.to_string());
        if let Some(zones) = &options.extra_zones {
            command.env("LAB_EXTRA_ZONES", zones);
        }
        if let Some(extra) = &options.unbound_extra {
            command.env("LAB_UNBOUND_EXTRA", extra);
        }
        if options.stop_with_process {
            command.env("LAB_OWNER_PID", std::process::id().to_string());
        }
        let out = command.output().expect("run setup.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_owned)
        };
        let pids: Vec<u32> = ["NSD_PID", "UNBOUND_PID"]
            .iter()
            .filter_map(|k| value(k)?.parse().ok())
            .collect();
        let lab = Self {
            nsd: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), nsd_port),
            unbound: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), unbound_port),
            trust_anchor: value("TRUST_ANCHOR").map(PathBuf::from).unwrap_or_default(),
            extra_zones: value("EXTRA_ZONES")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            pids,
            dir,
        };
        assert!(
            out.status.success() && lab.pids.len() == 2,
            "setup.sh failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("lab: ready in {:?}", started.elapsed());
        Some(lab)
    }

    /// The run directory: configuration, signed zones and the daemons' logs.
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        for signal in ["-TERM", "-KILL"] {
            let alive: Vec<String> = self
                .pids
                .iter()
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .map(u32::to_string)
                .collect();
            if alive.is_empty() {
                return;
            }
            let _ = Command::new("kill").arg(signal).args(&alive).status();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline
                && alive
                    .iter()
                    .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
