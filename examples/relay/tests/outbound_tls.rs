//! Outbound TLS policy end to end: the relay delivers to next hops that offer no STARTTLS, refuse it (454,
//! 502), break the handshake, present self-signed, expired, wrong-name and CA-signed certificates, or inject
//! bytes after their `220`; for every client mode each case is delivered or deferred exactly as DESIGN.md §3
//! says, and no MAIL crosses in plaintext when the mode requires TLS. All 36 (case, mode) destinations are
//! per-domain overrides of one relay, in one run.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::{
    Hop, NextHop, Submit, ca, message, rustls_server, self_signed, start_hop, start_postern_hop,
    start_relay, transport, wait_for,
};
use lettre::AsyncTransport;
use postern_relay::envelope::{FailureSource, RecipientState};

const MODES: [&str; 4] = ["none", "opportunistic", "encrypt", "verify"];
const CASES: [&str; 9] = [
    "nostarttls",
    "refuse454",
    "refuse502",
    "broken",
    "selfsigned",
    "expired",
    "wrongname",
    "casigned",
    "inject",
];

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Expect {
    Plain,
    Tls,
    /// Deferred with this enhanced code.
    Defer(&'static str),
}

/// DESIGN.md §3, row by row.
fn expected(case: &str, mode: &str) -> Expect {
    use Expect::{Defer, Plain, Tls};
    match (case, mode) {
        (_, "none") => Plain,
        ("nostarttls", "opportunistic") => Plain,
        ("nostarttls", _) => Defer("4.7.4"),
        ("refuse454" | "refuse502", "opportunistic") => Plain,
        // Any refusal of STARTTLS under a TLS-required mode: our own 4.7.x, never a bounce.
        ("refuse454" | "refuse502", _) => Defer("4.7."),
        ("broken", "opportunistic") => Plain,
        ("broken", _) => Defer("4.7.5"),
        ("selfsigned" | "expired" | "wrongname", "verify") => Defer("4.7.5"),
        _ => Tls,
    }
}

fn domain(case: &str, mode: &str) -> String {
    format!("{case}-{mode}.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_mode_against_every_next_hop() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    let mut hops: BTreeMap<String, (String, String, NextHop)> = BTreeMap::new();
    let mut toml = String::from(
        "delivery_workers = 8\n[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\nclient_reply = \"10s\"\ntls_handshake = \"5s\"\n",
    );
    let _ = write!(
        toml,
        "[certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n",
        dir.path().join("ca.pem").display()
    );
    let mut routes = String::from("[routes]\n");
    let mut overrides = String::from("[tls.outbound]\ntls = \"opportunistic\"\n");
    for case in CASES {
        let names: Vec<String> = MODES.iter().map(|m| domain(case, m)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for mode in MODES {
            // Well-behaved next hops are postern-tokio servers; the misbehaving ones are scripted.
            let hop = match case {
                "nostarttls" => start_postern_hop(None).await,
                "refuse454" => {
                    start_hop(
                        Hop::Refuse("454 4.7.0 TLS not available due to local problem"),
                        Duration::ZERO,
                    )
                    .await
                }
                "refuse502" => {
                    start_hop(
                        Hop::Refuse("502 5.5.1 Error: command not implemented"),
                        Duration::ZERO,
                    )
                    .await
                }
                "broken" => start_hop(Hop::BreakHandshake, Duration::ZERO).await,
                "selfsigned" => start_postern_hop(Some(&self_signed(&names, false))).await,
                "expired" => start_postern_hop(Some(&ca().leaf(&names, false, -30, -1))).await,
                "wrongname" => {
                    start_postern_hop(Some(&ca().leaf(&["elsewhere.test"], false, -1, 90))).await
                }
                "casigned" => start_postern_hop(Some(&ca().leaf(&names, false, -1, 90))).await,
                "inject" => {
                    start_hop(
                        Hop::Inject(rustls_server(&ca().leaf(&names, false, -1, 90))),
                        Duration::ZERO,
                    )
                    .await
                }
                _ => unreachable!(),
            };
            let d = domain(case, mode);
            let _ = writeln!(routes, "\"{d}\" = \"127.0.0.1:{}\"", hop.addr.port());
            let _ = writeln!(
                overrides,
                "[tls.outbound.domains.\"{d}\"]\ntls = \"{mode}\""
            );
            hops.insert(d, (case.to_owned(), mode.to_owned(), hop));
        }
    }
    toml.push_str(&routes);
    toml.push_str(&overrides);
    let relay = start_relay(dir.path(), &toml).await;
    let addr = relay.local_addrs()[0];

    for d in hops.keys() {
        transport(addr, Submit::Plain)
            .send(message(&format!("user@{d}"), d))
            .await
            .unwrap();
    }
    let deferred_count = hops
        .values()
        .filter(|(c, m, _)| matches!(expected(c, m), Expect::Defer(_)))
        .count();
    let scan = wait_for(
        dir.path(),
        Duration::from_secs(60),
        "every destination delivered or deferred",
        |s| {
            s.messages.len() == deferred_count
                && s.messages.iter().all(|m| m.envelope.attempts >= 1)
        },
    )
    .await;
    let queued: BTreeMap<String, _> = scan
        .messages
        .iter()
        .map(|m| {
            (
                m.envelope.recipients[0].address.host().to_string(),
                m.envelope.clone(),
            )
        })
        .collect();

    let mut report = Vec::new();
    for (d, (case, mode, hop)) in &hops {
        let want = expected(case, mode);
        let log = hop.log.lock().unwrap();
        let rcpt = format!("user@{d}");
        let got = match queued.get(d) {
            Some(env) => {
                let r = &env.recipients[0];
                assert_eq!(r.state, RecipientState::Deferred, "{d}");
                let f = r
                    .last_failure
                    .as_ref()
                    .unwrap_or_else(|| panic!("{d}: no failure recorded"));
                assert!(
                    f.result_type.is_some(),
                    "{d}: no RFC 8460 result type in {f:?}"
                );
                let rule = f.policy_rule.as_deref().unwrap_or_default();
                assert!(
                    rule.contains(&format!("domain {d} (override): {mode}")),
                    "{d}: policy rule {rule:?}"
                );
                // Our policy decides every one of these: a description
                // without code, the server's words quoted when it replied.
                assert_eq!(f.source, FailureSource::Local, "{d}: {f:?}");
                assert!(
                    !f.text.starts_with(|c: char| c.is_ascii_digit()),
                    "{d}: {f:?}"
                );
                let text = match case.as_str() {
                    "nostarttls" => Some("STARTTLS not offered"),
                    "refuse454" => Some(
                        "STARTTLS refused (454); server said: \
                         454 4.7.0 TLS not available due to local problem",
                    ),
                    "refuse502" => Some(
                        "STARTTLS refused (502); server said: \
                         502 5.5.1 Error: command not implemented",
                    ),
                    _ => None,
                };
                if let Some(text) = text {
                    assert_eq!(f.text, text, "{d}: {f:?}");
                }
                match want {
                    Expect::Defer(prefix) if f.code.to_string().starts_with(prefix) => want,
                    _ => Expect::Defer("other"),
                }
            }
            None => {
                let delivered: Vec<_> = log
                    .delivered
                    .iter()
                    .filter(|m| m.recipients.contains(&rcpt))
                    .collect();
                assert_eq!(
                    delivered.len(),
                    1,
                    "{d}: delivered {} times",
                    delivered.len()
                );
                if delivered[0].tls {
                    Expect::Tls
                } else {
                    Expect::Plain
                }
            }
        };
        if got != want {
            report.push(format!("{d}: expected {want:?}, got {got:?} ({log:?})"));
        }
        // Never a plaintext MAIL when the mode requires TLS.
        if matches!(mode.as_str(), "encrypt" | "verify") {
            assert_eq!(
                log.plaintext_mail, 0,
                "{d}: MAIL sent in plaintext under {mode}"
            );
        }
        if mode == "none" {
            assert_eq!(log.starttls, 0, "{d}: STARTTLS sent under none");
        }
        if let Expect::Defer(_) = want {
            assert!(log.delivered.is_empty(), "{d}: delivered although deferred");
        }
        if case == "broken" && mode == "opportunistic" {
            assert_eq!(
                log.connections, 2,
                "{d}: the retry is a new plaintext connection"
            );
        }
    }
    assert!(report.is_empty(), "mismatches:\n{}", report.join("\n"));
    relay.shutdown().await;
}

#[tokio::test]
async fn two_destinations_two_modes_one_message() {
    let dir = tempfile::tempdir().unwrap();
    // One next hop with a self-signed certificate serves both domains.
    let hop = start_hop(
        Hop::Tls(rustls_server(&self_signed(
            &["strict.test", "loose.test"],
            false,
        ))),
        Duration::ZERO,
    )
    .await;
    let port = hop.addr.port();
    let toml = format!(
        "[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\n\
         [routes]\n\"strict.test\" = \"127.0.0.1:{port}\"\n\"loose.test\" = \"127.0.0.1:{port}\"\n\
         [tls.outbound]\ntls = \"opportunistic\"\n[tls.outbound.domains.\"strict.test\"]\ntls = \"verify\"\n"
    );
    let relay = start_relay(dir.path(), &toml).await;
    let msg = lettre::Message::builder()
        .from("alice@client.test".parse().unwrap())
        .to("a@strict.test".parse().unwrap())
        .to("b@loose.test".parse().unwrap())
        .subject("two modes")
        .body(String::from("x"))
        .unwrap();
    transport(relay.local_addrs()[0], Submit::Plain)
        .send(msg)
        .await
        .unwrap();
    let scan = wait_for(dir.path(), Duration::from_secs(30), "one attempt", |s| {
        s.messages.first().is_some_and(|m| m.envelope.attempts >= 1)
    })
    .await;
    let env = &scan.messages[0].envelope;
    let strict = env
        .recipients
        .iter()
        .find(|r| r.address.to_string() == "a@strict.test")
        .unwrap();
    let loose = env
        .recipients
        .iter()
        .find(|r| r.address.to_string() == "b@loose.test")
        .unwrap();
    assert_eq!(loose.state, RecipientState::Delivered);
    assert_eq!(strict.state, RecipientState::Deferred);
    let f = strict.last_failure.as_ref().unwrap();
    assert_eq!(f.code.to_string(), "4.7.5");
    assert_eq!(
        f.result_type.map(|t| t.as_str()),
        Some("certificate-not-trusted")
    );
    assert_eq!(hop.delivered_to("b@loose.test").len(), 1);
    assert!(hop.delivered_to("a@strict.test").is_empty());

    // A flush makes the deferred recipient due again despite the 1h backoff
    // (here the flag file earlier versions' `queue flush` left, still honoured).
    std::fs::write(dir.path().join("state/spool/flush"), b"").unwrap();
    wait_for(
        dir.path(),
        Duration::from_secs(10),
        "a second attempt after flush",
        |s| s.messages.first().is_some_and(|m| m.envelope.attempts >= 2),
    )
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn tls_deferral_retries_then_bounces_after_the_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let hop = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let sink = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let toml = format!(
        "[queue]\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nmax_lifetime = \"3s\"\nscan_interval = \"1s\"\n\
         [routes]\n\"strict.test\" = \"127.0.0.1:{}\"\n\"client.test\" = \"127.0.0.1:{}\"\n\
         [tls.outbound.domains.\"strict.test\"]\ntls = \"encrypt\"\n",
        hop.addr.port(),
        sink.addr.port()
    );
    let relay = start_relay(dir.path(), &toml).await;
    transport(relay.local_addrs()[0], Submit::Plain)
        .send(message("bob@strict.test", "doomed"))
        .await
        .unwrap();
    // Retried several times, then the message expires, the bounce is delivered and both leave the queue.
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "the queue to empty",
        |s| s.messages.is_empty(),
    )
    .await;
    {
        let log = hop.log.lock().unwrap();
        assert!(
            log.connections >= 2,
            "retried: {} connections",
            log.connections
        );
        assert_eq!(log.plaintext_mail, 0);
        assert!(log.delivered.is_empty());
    }
    let bounces = sink.delivered_to("alice@client.test");
    assert_eq!(bounces.len(), 1);
    let text = String::from_utf8_lossy(&bounces[0].content);
    assert!(
        text.contains("Status: 4.7.4") || text.contains("Status: 5."),
        "{text}"
    );
    assert!(text.contains("bob@strict.test"), "{text}");
    relay.shutdown().await;
}

#[tokio::test]
async fn requiretls_messages_need_verified_tls_or_come_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    let good = start_postern_hop(Some(&ca().leaf(&["good.test"], false, -1, 90))).await;
    let weak = start_postern_hop(Some(&self_signed(&["weak.test"], false))).await;
    let sink = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let toml = format!(
        "[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\n\
         [routes]\n\"good.test\" = \"127.0.0.1:{}\"\n\"weak.test\" = \"127.0.0.1:{}\"\n\"client.test\" = \"127.0.0.1:{}\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n",
        good.addr.port(),
        weak.addr.port(),
        sink.addr.port(),
        dir.path().join("ca.pem").display()
    );
    let relay = start_relay(dir.path(), &toml).await;
    let addr = relay.local_addrs()[0];
    // Opportunistic by default, but the message asks for verified TLS at every hop (RFC 8689).
    let r = common::submit_requiretls(addr, "alice@client.test", "bob@good.test", "secret").await;
    assert!(r.starts_with("250 "), "{r}");
    let r = common::submit_requiretls(addr, "alice@client.test", "eve@weak.test", "secret").await;
    assert!(r.starts_with("250 "), "{r}");
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "both handled and the bounce delivered",
        |s| s.messages.is_empty(),
    )
    .await;
    let delivered = good.delivered_to("bob@good.test");
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].tls);
    assert!(
        weak.delivered_to("eve@weak.test").is_empty(),
        "never to an unverified server"
    );
    assert_eq!(weak.log.lock().unwrap().plaintext_mail, 0);
    // The sender gets a bounce with 5.7.30 and, for a REQUIRETLS message, headers only (RFC 8689 §5).
    let bounces = sink.delivered_to("alice@client.test");
    assert_eq!(bounces.len(), 1);
    let text = String::from_utf8_lossy(&bounces[0].content);
    assert!(text.contains("5.7.30"), "{text}");
    assert!(text.contains("eve@weak.test"), "{text}");
    assert!(!text.contains("secret"), "the body is not returned: {text}");
    relay.shutdown().await;
}
