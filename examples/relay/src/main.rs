//! `postern-relay`: the command line of the Postern relay.
//!
//! ```text
//! postern-relay [--config FILE]                 run the relay
//! postern-relay [--config FILE] check-config    validate, print the effective settings
//! postern-relay [--config FILE] queue list [--json]
//! postern-relay [--config FILE] queue flush
//! ```
//!
//! Errors go to stderr with exit status 1 (2 for usage errors).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing_subscriber::EnvFilter;

use postern_relay::config::Config;
use postern_relay::envelope::{Envelope, Failure};
use postern_relay::queue::Queue;
use postern_relay::spool::{Scan, Spool};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print the effective settings as TOML.
    CheckConfig,
    /// Show or act on the mail queue.
    #[command(subcommand)]
    Queue(QueueCommand),
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
    /// Ask the running relay to retry every queued message now (like
    /// `postqueue -f`). Leaves a `flush` flag file in the spool directory,
    /// which the relay consumes; if no relay runs, the next start retries
    /// everything that is due anyway.
    Flush,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Config::load(cli.config.as_deref())
        .map_err(Into::into)
        .and_then(|config| match cli.command {
            None => run(&config),
            Some(Command::CheckConfig) => check_config(&config, cli.config.is_some()),
            Some(Command::Queue(QueueCommand::List { json })) => queue_list(&config, json),
            Some(Command::Queue(QueueCommand::Flush)) => queue_flush(&config),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
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

/// Starts the relay: logging, the spool (with recovery), the queue.
fn run(config: &Config) -> CliResult {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    std::fs::create_dir_all(&config.state_dir)?;
    let (spool, recovery) = Spool::open(config.spool_dir())?;
    if recovery.cleaned_temp > 0 {
        tracing::info!(
            count = recovery.cleaned_temp,
            "removed incomplete messages (never acknowledged)"
        );
    }
    for bad in &recovery.corrupt {
        tracing::warn!(entry = %bad.name, reason = %bad.reason, moved_to = ?bad.moved_to, "unreadable queue entry moved aside");
    }
    let mut queue = Queue::new(config.retry_policy());
    for envelope in recovery.messages {
        queue.insert(envelope);
    }
    if spool.take_flush_request()? {
        queue.flush(SystemTime::now());
    }
    tracing::info!(
        hostname = %config.hostname,
        spool = %spool.root().display(),
        queued = queue.len(),
        "spool recovered"
    );
    Err(
        "the SMTP listener and delivery are not available in this build; \
         the configuration and the spool were checked"
            .into(),
    )
}

fn check_config(config: &Config, from_file: bool) -> CliResult {
    print!("{}", toml::to_string(config)?);
    if config.tls.is_some() {
        eprintln!(
            "note: the [tls] table is passed to the TLS policy, which checks it when the relay starts"
        );
    }
    eprintln!(
        "configuration OK{}",
        if from_file {
            ""
        } else {
            " (embedded defaults)"
        }
    );
    Ok(())
}

fn queue_list(config: &Config, json: bool) -> CliResult {
    let scan = Spool::scan(&config.spool_dir())?;
    for bad in &scan.corrupt {
        eprintln!(
            "warning: unreadable queue entry {}: {}",
            bad.name, bad.reason
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&queue_json(&scan)?)?);
    } else {
        print!("{}", queue_text(&scan));
    }
    Ok(())
}

fn queue_json(scan: &Scan) -> Result<serde_json::Value, serde_json::Error> {
    let mut messages = Vec::with_capacity(scan.messages.len());
    for m in &scan.messages {
        let mut v = serde_json::to_value(&m.envelope)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("size".into(), m.size.into());
        }
        messages.push(v);
    }
    let corrupt: Vec<_> = scan
        .corrupt
        .iter()
        .map(|c| serde_json::json!({ "entry": c.name, "reason": c.reason }))
        .collect();
    Ok(serde_json::json!({ "messages": messages, "corrupt": corrupt }))
}

fn queue_text(scan: &Scan) -> String {
    use std::fmt::Write as _;
    if scan.messages.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = String::new();
    let mut total = 0u64;
    for m in &scan.messages {
        let e: &Envelope = &m.envelope;
        total += m.size;
        let sender = if e.is_null_sender() {
            "<>"
        } else {
            e.reverse_path.as_str()
        };
        let _ = writeln!(
            out,
            "{}  {} bytes  {}  from {sender}",
            e.id,
            m.size,
            when(e.received_at)
        );
        let _ = write!(
            out,
            "    attempts: {}, next attempt: {}",
            e.attempts,
            when(e.next_attempt)
        );
        if e.params.requiretls {
            out.push_str(", REQUIRETLS");
        }
        out.push('\n');
        if let Some(f) = &e.last_failure {
            let _ = writeln!(out, "    last failure: {}", failure_text(f));
        }
        for r in &e.recipients {
            let state = serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            let _ = write!(out, "      {:<10} {}", state.unwrap_or_default(), r.address);
            if let Some(f) = r.last_failure.as_ref().filter(|_| r.state.is_open()) {
                let _ = write!(out, "  ({})", f.code);
            }
            out.push('\n');
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "-- {} bytes in {} messages",
        total,
        scan.messages.len()
    );
    out
}

fn failure_text(f: &Failure) -> String {
    let mut s = format!("{} {}", f.code, f.reply);
    if let Some(remote) = &f.remote_mta {
        s.push_str(&format!(" (from {remote})"));
    }
    if let Some(rt) = &f.result_type {
        s.push_str(&format!(" [result-type: {rt}]"));
    }
    if let Some(rule) = &f.policy_rule {
        s.push_str(&format!(" [policy: {rule}]"));
    }
    s
}

fn when(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

fn queue_flush(config: &Config) -> CliResult {
    Spool::request_flush(&config.spool_dir())?;
    println!("flush requested: the relay retries every queued message at its next queue scan");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_relay::envelope::{MailParams, Recipient, RecipientState};
    use std::time::{Duration, UNIX_EPOCH};

    fn scan_with_failure() -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let env = Envelope::new(
            "alice@example.org",
            [
                Recipient::new("bob@example.net"),
                Recipient::new("carol@example.net"),
            ],
            MailParams::default(),
            at,
        );
        let mut incoming = spool.begin(env, None).unwrap();
        incoming
            .write_chunk(b"Subject: x\r\n\r\nhello\r\n")
            .unwrap();
        let mut env = incoming.commit().unwrap();
        let mut f = Failure::new("4.7.5".parse().unwrap(), "certificate not trusted", at);
        f.result_type = Some("certificate-not-trusted".into());
        f.policy_rule = Some("domain example.net: verify".into());
        env.attempts = 2;
        env.recipients[0].state = RecipientState::Deferred;
        env.recipients[0].last_failure = Some(f.clone());
        env.recipients[1].state = RecipientState::Delivered;
        env.last_failure = Some(f);
        spool.update(&env).unwrap();
        Spool::scan(dir.path()).unwrap()
    }

    #[test]
    fn queue_list_text_shows_state_and_last_failure() {
        let text = queue_text(&scan_with_failure());
        assert!(text.contains("from alice@example.org"), "{text}");
        assert!(text.contains("attempts: 2"), "{text}");
        assert!(text.contains(
            "last failure: 4.7.5 certificate not trusted [result-type: certificate-not-trusted] \
             [policy: domain example.net: verify]"
        ));
        assert!(
            text.contains("deferred   bob@example.net  (4.7.5)"),
            "{text}"
        );
        assert!(text.contains("delivered  carol@example.net\n"), "{text}");
        assert!(text.contains("-- 21 bytes in 1 messages"), "{text}");
        assert_eq!(queue_text(&Scan::default()), "Mail queue is empty\n");
    }

    #[test]
    fn queue_list_json_is_machine_readable() {
        let v = queue_json(&scan_with_failure()).unwrap();
        let m = &v["messages"][0];
        assert_eq!(m["reverse_path"], "alice@example.org");
        assert_eq!(m["size"], 21);
        assert_eq!(m["recipients"][0]["state"], "deferred");
        assert_eq!(m["last_failure"]["code"], "4.7.5");
        assert_eq!(m["last_failure"]["result_type"], "certificate-not-trusted");
        assert_eq!(
            m["last_failure"]["policy_rule"],
            "domain example.net: verify"
        );
        assert_eq!(v["corrupt"].as_array().map(Vec::len), Some(0));
    }

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
}
