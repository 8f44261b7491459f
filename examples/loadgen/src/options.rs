//! Command-line options and their validation.
//!
//! Every run is bounded twice, by a count (messages or connections) and by a wall-clock duration; both are
//! hard caps. Targets and listen addresses must be loopback addresses: the generator is a benchmark tool and
//! refuses to load anybody else's server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Longest run accepted, whatever the mode.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest message generated.
pub(crate) const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Most concurrent connections.
pub(crate) const MAX_CONNECTIONS: usize = 60_000;

/// An invalid option value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OptionError {
    /// The address is not of the form `host:port`.
    #[error("not an address (host:port): {0}")]
    BadAddress(String),
    /// The address is not a loopback address.
    #[error("refusing non-loopback address {0}: loopback only")]
    NotLoopback(String),
    /// The duration does not parse.
    #[error("not a duration (e.g. 30s, 500ms, 2m): {0}")]
    BadDuration(String),
    /// The value is outside the accepted range.
    #[error("{name} must be between {min} and {max}")]
    OutOfRange {
        /// The option.
        name: &'static str,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A client certificate was given without its key, or the reverse.
    #[error("--client-cert and --client-key go together")]
    HalfClientCert,
    /// A TLS option was given without `--starttls`.
    #[error("{0} needs --starttls")]
    NeedsStartTls(&'static str),
}

/// SMTP load generator and discard sink for benchmarks, loopback only.
#[derive(Debug, Parser)]
#[command(name = "postern-loadgen", version, about)]
pub(crate) struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Mode,
}

/// The three modes.
#[derive(Debug, Subcommand)]
pub(crate) enum Mode {
    /// Send messages as fast as the server takes them and report throughput and latency.
    Send(SendArgs),
    /// Open N connections that stay idle after EHLO (memory per idle connection), then QUIT.
    Idle(IdleArgs),
    /// Accept and discard mail (a next hop for relays under test), with optional STARTTLS.
    Sink(SinkArgs),
}

/// TLS protocol versions offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsVersion {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
    /// Both; the server picks (normally 1.3).
    Any,
}

/// Which server key type the client asks for, through the signature schemes it offers (a server with an RSA
/// and an ECDSA certificate picks the certificate the client can verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyType {
    /// Offer only RSA signature schemes (PSS and PKCS#1).
    Rsa,
    /// Offer only ECDSA signature schemes.
    Ecdsa,
    /// Offer every scheme the provider supports; the server chooses.
    Any,
}

/// Connection options shared by `send` and `idle`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server address, `host:port`; loopback only (`127.0.0.1`, `[::1]`, `localhost`).
    #[arg(long, short = 't', default_value = "127.0.0.1:2525")]
    pub(crate) target: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub(crate) connections: usize,
    /// Issue STARTTLS after EHLO (RFC 3207) and run the rest over TLS.
    #[arg(long)]
    pub(crate) starttls: bool,
    /// TLS versions offered.
    #[arg(long, value_enum, default_value = "any")]
    pub(crate) tls_version: TlsVersion,
    /// Server certificate type to ask for (via the signature schemes offered).
    #[arg(long, value_enum, default_value = "any")]
    pub(crate) server_key: KeyType,
    /// Resume TLS sessions: one client session cache shared by all connections (off: every handshake is full).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Client certificate chain (PEM), presented when the server asks.
    #[arg(long, requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM).
    #[arg(long, requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Verify the server certificate against these roots (PEM). Without it any certificate is accepted, but
    /// the handshake signatures are still verified.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Name sent in SNI and, with `--ca`, matched against the certificate.
    #[arg(long, default_value = "localhost")]
    pub(crate) server_name: String,
    /// Name sent with EHLO.
    #[arg(long, default_value = "loadgen.localhost")]
    pub(crate) ehlo: String,
    /// Hard cap on the run's wall-clock time (e.g. `30s`, `2m`).
    #[arg(long, short = 'd', default_value = "60s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Tokio worker threads (default: one per CPU the process may use).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `send`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SendArgs {
    /// Connection options.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Total messages to send (a hard cap, like `--duration`).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) messages: u64,
    /// Messages sent on one connection before QUIT.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub(crate) per_connection: u64,
    /// Message size in bytes (headers included).
    #[arg(long, short = 's', default_value_t = 4096)]
    pub(crate) size: usize,
    /// Envelope sender.
    #[arg(long, default_value = "loadgen@localhost")]
    pub(crate) from: String,
    /// Envelope recipient.
    #[arg(long, default_value = "sink@localhost")]
    pub(crate) to: String,
    /// Do not count this many seconds at the start (warm-up) in the latency percentiles.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
}

/// Options of `idle`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdleArgs {
    /// Connection options (`--connections` is the number of idle sessions to hold).
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// How long to hold the sessions once all are idle (the run still ends at `--duration`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 200)]
    pub(crate) ramp: usize,
}

/// Options of `sink`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SinkArgs {
    /// Address to listen on; loopback only.
    #[arg(long, short = 'l', default_value = "127.0.0.1:2526")]
    pub(crate) listen: String,
    /// Certificate chain (PEM) to offer STARTTLS with; without it STARTTLS is not advertised.
    #[arg(long, requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) for `--cert`.
    #[arg(long, requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Host name in the greeting.
    #[arg(long, default_value = "sink.localhost")]
    pub(crate) hostname: String,
    /// Stop after this long (a hard cap; SIGINT / SIGTERM stop it earlier).
    #[arg(long, short = 'd', default_value = "1h", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Tokio worker threads (default: one per CPU the process may use).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// Parse `host:port` and require a loopback address. `localhost` means `127.0.0.1`; no DNS is used.
pub(crate) fn loopback_addr(s: &str) -> Result<SocketAddr, OptionError> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| OptionError::BadAddress(s.into()))?;
            let port: u16 = port
                .parse()
                .map_err(|_| OptionError::BadAddress(s.into()))?;
            if !host.eq_ignore_ascii_case("localhost") {
                return Err(OptionError::NotLoopback(s.into()));
            }
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        }
    };
    if !addr.ip().is_loopback() {
        return Err(OptionError::NotLoopback(s.into()));
    }
    Ok(addr)
}

/// Parse a duration: a number with an optional unit `ms`, `s`, `m` or `h` (bare numbers are seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, OptionError> {
    let bad = || OptionError::BadDuration(s.into());
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn in_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), OptionError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OptionError::OutOfRange { name, min, max })
    }
}

impl ClientArgs {
    /// Check the values clap cannot check; returns the target address.
    pub(crate) fn validate(&self) -> Result<SocketAddr, OptionError> {
        let addr = loopback_addr(&self.target)?;
        in_range(
            "--connections",
            self.connections as u64,
            1,
            MAX_CONNECTIONS as u64,
        )?;
        in_range(
            "--duration (ms)",
            self.duration.as_millis() as u64,
            1,
            MAX_DURATION.as_millis() as u64,
        )?;
        if let Some(t) = self.threads {
            in_range("--threads", t as u64, 1, 256)?;
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(OptionError::HalfClientCert);
        }
        if !self.starttls {
            if self.resume {
                return Err(OptionError::NeedsStartTls("--resume"));
            }
            if self.client_cert.is_some() {
                return Err(OptionError::NeedsStartTls("--client-cert"));
            }
        }
        Ok(addr)
    }
}

impl SendArgs {
    /// Check the values clap cannot check; returns the target address.
    pub(crate) fn validate(&self) -> Result<SocketAddr, OptionError> {
        let addr = self.client.validate()?;
        in_range("--messages", self.messages, 1, u64::MAX)?;
        in_range("--per-connection", self.per_connection, 1, 1_000_000)?;
        in_range("--size", self.size as u64, 128, MAX_MESSAGE_SIZE as u64)?;
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(args: &[&str]) -> Result<SendArgs, String> {
        let mut argv = vec!["postern-loadgen", "send"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Mode::Send(s) => Ok(s),
            _ => Err("not send".into()),
        }
    }

    #[test]
    fn loopback_addresses_accepted() {
        assert_eq!(loopback_addr("127.0.0.1:25").unwrap().port(), 25);
        assert_eq!(
            loopback_addr("127.1.2.3:2525").unwrap().ip(),
            "127.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert!(loopback_addr("[::1]:2525").unwrap().ip().is_loopback());
        assert_eq!(
            loopback_addr("LocalHost:2525").unwrap(),
            "127.0.0.1:2525".parse().unwrap()
        );
    }

    #[test]
    fn other_addresses_refused() {
        for a in [
            "192.0.2.1:25",
            "[2001:db8::1]:25",
            "0.0.0.0:25",
            "example.com:25",
            "localhost.example.com:25",
        ] {
            assert_eq!(
                loopback_addr(a),
                Err(OptionError::NotLoopback(a.into())),
                "{a}"
            );
        }
        assert!(matches!(
            loopback_addr("127.0.0.1"),
            Err(OptionError::BadAddress(_))
        ));
        assert!(matches!(
            loopback_addr("localhost:99999"),
            Err(OptionError::BadAddress(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-1s", "25h", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn send_validation() {
        assert!(
            send(&["--target", "127.0.0.1:2525"])
                .unwrap()
                .validate()
                .is_ok()
        );
        let e = send(&["--target", "10.0.0.1:25"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e, OptionError::NotLoopback("10.0.0.1:25".into()));
        let e = send(&["--connections", "0"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(
            e,
            OptionError::OutOfRange {
                name: "--connections",
                ..
            }
        ));
        let e = send(&["--per-connection", "0"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(
            e,
            OptionError::OutOfRange {
                name: "--per-connection",
                ..
            }
        ));
        let e = send(&["--size", "10"]).unwrap().validate().unwrap_err();
        assert!(matches!(e, OptionError::OutOfRange { name: "--size", .. }));
        let e = send(&["--resume"]).unwrap().validate().unwrap_err();
        assert_eq!(e, OptionError::NeedsStartTls("--resume"));
        // clap itself refuses half a client certificate.
        assert!(send(&["--starttls", "--client-cert", "c.pem"]).is_err());
        assert!(send(&["--starttls", "--tls-version", "1.4"]).is_err());
        let ok = send(&[
            "--starttls",
            "--tls-version",
            "1.2",
            "--resume",
            "-n",
            "5",
            "-p",
            "10",
        ])
        .unwrap();
        assert_eq!(ok.client.tls_version, TlsVersion::Tls12);
        assert!(ok.validate().is_ok());
    }
}
