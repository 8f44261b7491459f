//! `postern-relay`: the command line of the Postern relay.
//!
//! ```text
//! postern-relay [--config FILE] [--allow-root]               run the relay
//! postern-relay [--config FILE] check-config                 validate, print the effective settings
//! postern-relay [--config FILE] cert list [--json]           the certificate table
//! postern-relay [--config FILE] cert import --name N --cert chain.pem --key key.pem [--force]
//! postern-relay [--config FILE] cert remove NAME             remove an imported certificate
//! postern-relay [--config FILE] cert regenerate-default      a new Default Cert replaces the old
//! postern-relay [--config FILE] cert inspect FILE [--key K]  check a chain without importing it
//! postern-relay [--config FILE] cert use NAME|--clear        the certificate served first for its names
//! postern-relay [--config FILE] policy explain DOMAIN [--dns]  outbound decision and the rule that matched, next hop,
//!                                                            names matched, cached MTA-STS policy; --dns: route, DNSSEC status, TLSA, DANE per host
//! postern-relay [--config FILE] probe DESTINATION [--servername NAME] [--ehlo NAME] [--all]
//!                                                            the chain, what each client TLS mode and the configured policy would decide
//! postern-relay [--config FILE] queue list [--json]              like postqueue -p
//! postern-relay [--config FILE] queue show ID [--body]             like postcat -q
//! postern-relay [--config FILE] queue delete ID...|--all           like postsuper -d
//! postern-relay [--config FILE] queue hold ID...|--all             like postsuper -h
//! postern-relay [--config FILE] queue release ID...|--all          like postsuper -H
//! postern-relay [--config FILE] queue flush [--domain D | --id ID] like postqueue -f / -s / -i
//! postern-relay [--config FILE] reload                       the running relay reads its file again (SIGHUP)
//! ```
//!
//! `queue delete`, `hold`, `release` and `flush` act on the spool
//! themselves when no relay runs, and otherwise hand the request to the
//! running relay and wait up to 10 s for its answer (see
//! `postern_relay::queue::control`).
//!
//! Errors go to stderr with exit status 1 (2 for usage errors). A command
//! whose standard output is closed early (`queue list | head`) stops quietly
//! with status 141, as a Unix tool killed by SIGPIPE does. Log lines are
//! coloured only when stderr is a terminal and `NO_COLOR` is not set.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use postern_relay::cli::{self, CliResult, StdoutClosed};
use postern_relay::config::{Config, LogFormat};
use postern_relay::envelope::MessageId;
use postern_relay::queue::control::{Request, Selection};
use postern_relay::relay::{Relay, ReloadReport};

#[derive(Debug, Parser)]
#[command(
    name = "postern-relay",
    version,
    about = "TLS-policy-enforcing SMTP relay"
)]
struct Cli {
    /// Configuration file (TOML); without it the embedded defaults apply.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run the relay as root without `user` (as `allow_root = true`).
    #[arg(long)]
    allow_root: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration (the [tls] policy and the certificate
    /// files included) and print the effective settings as TOML.
    CheckConfig,
    /// The TLS certificate table.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The TLS policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Connect to a next hop, try STARTTLS and show what each client TLS
    /// mode would decide (like posttls-finger).
    Probe {
        /// A domain (routed as delivery routes it: static route or MX
        /// lookup), or `[host]`, `[host]:port`, `host:port` (no MX lookup).
        target: String,
        /// The name sent as SNI and verified (posttls-finger -N is close).
        #[arg(long, value_name = "NAME")]
        servername: Option<String>,
        /// The name said in EHLO (posttls-finger -H); default: `hostname`.
        #[arg(long, value_name = "NAME")]
        ehlo: Option<String>,
        /// Probe every host of a domain's route, not only the first that
        /// answers.
        #[arg(long)]
        all: bool,
    },
    /// Show or act on the mail queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Make the running relay read its configuration file again (SIGHUP)
    /// and say whether it took it (like `postfix reload`).
    Reload,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// List the certificates: name, subject, names, key, signature,
    /// validity, SHA-256 fingerprint, self-signed, status. Writes nothing.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Import a certificate chain and its key (PEM). A running relay serves
    /// it without restart.
    Import {
        /// Name in the certificate table.
        #[arg(long)]
        name: String,
        /// The certificate chain, leaf first (PEM).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Import a certificate that has expired or is not yet valid (it is
        /// served only to clients that no valid certificate can answer).
        #[arg(long)]
        force: bool,
    },
    /// Remove an imported certificate. A running relay stops serving it
    /// without restart. (The Default Cert is replaced, never removed: see
    /// regenerate-default.)
    Remove {
        /// Its name in the certificate table.
        name: String,
    },
    /// Replace the Default Cert with a new self-signed one (RSA of
    /// certificates.default_rsa_bits, SHA-256, and its ECDSA companion). A
    /// running relay serves it without restart.
    RegenerateDefault,
    /// Show what `cert list` would for a PEM chain file and check it (order,
    /// validity, the key with --key), without importing it. Exit status 1
    /// when a problem is found.
    Inspect {
        /// The certificate chain, leaf first (PEM).
        file: PathBuf,
        /// A private key (PEM) to check against the leaf.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Choose the certificate served first when several carry the same name
    /// (the host name, most often); --clear returns to the default order.
    #[command(group = clap::ArgGroup::new("choice").required(true))]
    Use {
        /// Its name in the certificate table ("Default Cert" included).
        #[arg(group = "choice")]
        name: Option<String>,
        /// Remove the preference.
        #[arg(long, group = "choice")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The outbound TLS decision for a destination and the rule that
    /// matched, the next hop, the names the certificate is matched against,
    /// and the MTA-STS policy in the cache.
    Explain {
        /// A domain, or [host]:port.
        destination: String,
        /// Also look the destination up in DNS as delivery would: the route
        /// and its DNSSEC status, each host's addresses, TLSA records and
        /// DANE verdict, and what the connection would require.
        #[arg(long)]
        dns: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queued messages with recipient states and the last failure
    /// (like `postqueue -p`).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: its envelope (recipients with their state and
    /// last failure) and its header (like `postcat -q`). Reads only.
    Show {
        /// The message's queue id.
        id: MessageId,
        /// Show the body too.
        #[arg(long)]
        body: bool,
    },
    /// Delete messages: never delivered, never bounced (like `postsuper
    /// -d`). A message being delivered is removed when its attempt ends.
    Delete(Messages),
    /// Put messages on hold: not attempted, not expired, until released
    /// (like `postsuper -h`).
    Hold(Messages),
    /// Release held messages: due at once (like `postsuper -H`).
    Release(Messages),
    /// Retry queued messages now (like `postqueue -f`; `-s` with
    /// --domain, `-i` with --id). Held messages are not retried. With no
    /// relay running, the flush waits for its next start.
    Flush {
        /// Only the messages with a recipient still to deliver in this domain.
        #[arg(long, conflicts_with = "id")]
        domain: Option<String>,
        /// Only this message.
        #[arg(long)]
        id: Option<MessageId>,
    },
}

/// The messages an action is about.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Messages {
    /// Queue ids.
    ids: Vec<MessageId>,
    /// Every queued message.
    #[arg(long)]
    all: bool,
}

impl Messages {
    fn selection(self) -> Selection {
        if self.all {
            Selection::All
        } else {
            Selection::Ids(self.ids)
        }
    }
}

/// Runs a `queue` subcommand.
fn queue(config: &Config, command: QueueCommand) -> CliResult {
    let request = match command {
        QueueCommand::List { json } => return cli::queue_list(config, json),
        QueueCommand::Show { id, body } => return cli::queue_show(config, &id, body),
        QueueCommand::Delete(m) => Request::Delete {
            messages: m.selection(),
        },
        QueueCommand::Hold(m) => Request::Hold {
            messages: m.selection(),
        },
        QueueCommand::Release(m) => Request::Release {
            messages: m.selection(),
        },
        QueueCommand::Flush { domain, id } => Request::Flush {
            messages: match (domain, id) {
                (Some(domain), _) => Selection::Domain(domain),
                (None, Some(id)) => Selection::Ids(vec![id]),
                (None, None) => Selection::All,
            },
        },
    };
    cli::queue_control(config, &request)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Config::load(cli.config.as_deref())
        .map_err(Into::into)
        .and_then(|config| match cli.command {
            None => {
                let mut config = config;
                config.allow_root |= cli.allow_root;
                run(config, cli.config.as_deref())
            }
            Some(Command::CheckConfig) => cli::check_config(&config, cli.config.is_some()),
            Some(Command::Cert(CertCommand::List { json })) => cli::cert_list(&config, json),
            Some(Command::Cert(CertCommand::Import {
                name,
                cert,
                key,
                force,
            })) => cli::cert_import(&config, &name, &cert, &key, force),
            Some(Command::Cert(CertCommand::Remove { name })) => cli::cert_remove(&config, &name),
            Some(Command::Cert(CertCommand::RegenerateDefault)) => {
                cli::cert_regenerate_default(&config)
            }
            Some(Command::Cert(CertCommand::Inspect { file, key })) => {
                cli::cert_inspect(&config, &file, key.as_deref())
            }
            Some(Command::Cert(CertCommand::Use { name, .. })) => {
                cli::cert_use(&config, name.as_deref())
            }
            Some(Command::Policy(PolicyCommand::Explain { destination, dns })) => {
                cli::policy_explain(&config, &destination)?;
                if dns {
                    runtime()?.block_on(cli::policy_explain_dns(&config, &destination))
                } else {
                    Ok(())
                }
            }
            Some(Command::Probe {
                target,
                servername,
                ehlo,
                all,
            }) => runtime().and_then(|rt| {
                rt.block_on(cli::probe(
                    &config,
                    &target,
                    servername.as_deref(),
                    ehlo.as_deref(),
                    all,
                ))
            }),
            Some(Command::Queue(command)) => queue(&config, command),
            Some(Command::Reload) => cli::reload(&config),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing to say, and nobody to say it to.
        Err(e) if e.is::<StdoutClosed>() => ExitCode::from(StdoutClosed::EXIT_STATUS),
        Err(e) => {
            let source = match &cli.config {
                Some(path) => format!("{}: ", path.display()),
                None => String::new(),
            };
            eprintln!("postern-relay: error: {source}{e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Box<dyn std::error::Error>> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the relay until SIGINT or SIGTERM; SIGHUP reloads the
/// configuration from `path` (the embedded defaults without one). As root
/// it needs `user` (it switches to it once its ports are bound) or
/// `allow_root = true`. Under systemd (`Type=notify`) it says READY=1 once
/// it listens, RELOADING=1 and READY=1 around a reload, STOPPING=1 at
/// shutdown.
fn run(config: Config, path: Option<&Path>) -> CliResult {
    #[cfg(unix)]
    postern_relay::privileges::refuse_root(&config)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        // One object per line: timestamp, level, target, message and the
        // event's fields at the top level (docs/configuration.md).
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Plain => logs
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .init(),
    }
    #[cfg(unix)]
    if let Some(warning) = postern_relay::privileges::root_warning(&config) {
        tracing::warn!("{warning}");
    }
    runtime()?.block_on(async move {
        let relay = Relay::start(config).await?;
        wait_for_signals(&relay, path).await?;
        #[cfg(unix)]
        notify(&[sd_notify::NotifyState::Stopping]);
        relay.shutdown().await;
        Ok(())
    })
}

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>). Log
/// files and journals get plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(unix)]
async fn wait_for_signals(relay: &Relay, path: Option<&Path>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Ready once a SIGHUP can no longer end the process.
    notify(&[sd_notify::NotifyState::Ready]);
    let mut serial = 0;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                serial += 1;
                reload(relay, path, serial).await;
            }
        }
    }
    tracing::info!("shutdown requested");
    Ok(())
}

/// Tells the service manager (systemd `Type=notify`) the relay's state;
/// nothing when `NOTIFY_SOCKET` is not set.
#[cfg(unix)]
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_relay: &Relay, _path: Option<&Path>) -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// Reads the configuration from `path` again and puts it in force; on any
/// error the running configuration stays. The outcome is logged and left
/// in the state directory for `postern-relay reload`.
#[cfg(unix)]
async fn reload(relay: &Relay, path: Option<&Path>, serial: u64) {
    // The service manager sees the relay reloading until the outcome.
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
    let source = path.map_or_else(
        || "the embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    tracing::info!("reloading the configuration from {source}");
    let outcome = match Config::load(path) {
        Ok(config) => relay.reload(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "configuration reload refused: {source}: {e}; the running configuration stays");
    }
    let state_dir = relay.config().state_dir;
    if let Err(e) = ReloadReport::new(serial, &outcome).save(&state_dir) {
        tracing::warn!(error = %e, "cannot write the reload report in {}", state_dir.display());
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_the_documented_commands() {
        let cli = Cli::try_parse_from([
            "postern-relay",
            "queue",
            "list",
            "--json",
            "--config",
            "r.toml",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Queue(QueueCommand::List { json: true }))
        ));
        assert_eq!(cli.config, Some(PathBuf::from("r.toml")));
        let cli = Cli::try_parse_from(["postern-relay"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["postern-relay", "queue", "drop"]).is_err());
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, clap::Error> {
        let cli = Cli::try_parse_from([&["postern-relay", "queue"], args].concat())?;
        match cli.command {
            Some(Command::Queue(q)) => Ok(q),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queue_actions_name_messages_or_all_never_both() {
        let Ok(QueueCommand::Hold(m)) = parse(&["hold", "ABC", "DEF"]) else {
            panic!()
        };
        assert_eq!(
            m.selection(),
            Selection::Ids(vec!["ABC".parse().unwrap(), "DEF".parse().unwrap()])
        );
        let Ok(QueueCommand::Delete(m)) = parse(&["delete", "--all"]) else {
            panic!()
        };
        assert_eq!(m.selection(), Selection::All);
        assert!(parse(&["delete"]).is_err(), "nothing named");
        assert!(parse(&["release", "ABC", "--all"]).is_err(), "both");
        assert!(parse(&["hold", "not/an/id"]).is_err());
        assert!(parse(&["show"]).is_err());
        assert!(matches!(
            parse(&["show", "ABC", "--body"]),
            Ok(QueueCommand::Show { body: true, .. })
        ));
        assert!(parse(&["flush", "--domain", "a.test", "--id", "ABC"]).is_err());
        assert!(matches!(
            parse(&["flush"]),
            Ok(QueueCommand::Flush {
                domain: None,
                id: None
            })
        ));
    }

    #[test]
    fn cert_use_names_a_certificate_or_clears_never_both() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["postern-relay", "cert", "use"], args].concat())
                .map(|cli| cli.command)
        };
        assert!(matches!(
            parse(&["mx"]),
            Ok(Some(Command::Cert(CertCommand::Use { name: Some(n), clear: false }))) if n == "mx"
        ));
        assert!(matches!(
            parse(&["--clear"]),
            Ok(Some(Command::Cert(CertCommand::Use {
                name: None,
                clear: true
            })))
        ));
        assert!(parse(&[]).is_err(), "nothing chosen");
        assert!(parse(&["mx", "--clear"]).is_err(), "both");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
