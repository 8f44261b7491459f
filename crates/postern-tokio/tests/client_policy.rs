//! Our client against next hops built on our server session, for every client TLS mode: delivered or deferred
//! exactly as the outcome table of the design says, and never a MAIL command in plaintext when TLS is required.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AfterReady, HopConfig, Pem, fixtures, start_hop};
use postern_certs::ClientTlsContext;
use postern_policy::{
    ClientTlsMode, DestinationPolicy, NextHop, OutboundPolicy, PeerTrust, ResultType,
};
use postern_smtp::{AfterStartTls, Envelope, ForwardPath, ReversePath};
use postern_tokio::client::{Client, ClientSettings, Destination};

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nbody\r\n";

const MODES: [ClientTlsMode; 6] = [
    ClientTlsMode::None,
    ClientTlsMode::Opportunistic,
    ClientTlsMode::Encrypt,
    ClientTlsMode::Verify,
    ClientTlsMode::Secure,
    ClientTlsMode::Fingerprint,
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Delivered without TLS.
    Plain,
    /// Delivered over TLS with this trust.
    Tls(PeerTrust),
    /// Delivered over a second, plaintext connection after a failed handshake.
    Retry,
    /// Deferred with this enhanced code and RFC 8460 result type.
    Defer(&'static str, ResultType),
}

use Expect::{Defer, Plain, Retry, Tls};

fn policy(mode: ClientTlsMode) -> OutboundPolicy {
    let mut d = DestinationPolicy::new(mode);
    if mode == ClientTlsMode::Fingerprint {
        d.pins = vec![fixtures().good.fingerprint()];
    }
    OutboundPolicy::new(d)
}

fn client(after_starttls: AfterStartTls) -> Client {
    let mut settings = ClientSettings::new("client.example.net");
    settings.smtp.after_starttls = after_starttls;
    settings.smtp.timeouts.command = Duration::from_secs(5);
    settings.smtp.timeouts.data = Duration::from_secs(5);
    settings.connect_timeout = Duration::from_secs(5);
    settings.handshake_timeout = Duration::from_secs(5);
    Client::new(
        settings,
        Arc::new(ClientTlsContext::new(fixtures().ca.roots())),
    )
}

async fn run_case(
    case: &str,
    hop_config: HopConfig,
    after_starttls: AfterStartTls,
    expected: [Expect; 6],
) {
    let client = client(after_starttls);
    let envelope = Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        [ForwardPath::parse("<bob@example.org>").unwrap()],
    );
    for (mode, expect) in MODES.into_iter().zip(expected) {
        let hop = start_hop(hop_config.clone()).await;
        let destination = Destination::new(
            vec![hop.addr],
            NextHop::parse("example.org").unwrap(),
            Some(common::MX.parse().unwrap()),
        );
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            client.deliver(&destination, &envelope, MESSAGE, &policy(mode)),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}/{mode}: delivery hung"));
        let what = format!("{case}/{mode}: expected {expect:?}, got {result:#?}");
        match expect {
            Plain => {
                assert!(result.all_delivered(), "{what}");
                assert!(result.tls.is_none() && !result.plaintext_retry, "{what}");
                assert_eq!(hop.messages(), vec![(false, MESSAGE.to_vec())], "{what}");
                // The record of plaintext works: here MAIL did cross in plaintext, as allowed.
                assert!(
                    hop.plaintext().contains("MAIL FROM:<alice@example.net>"),
                    "{what}"
                );
            }
            Tls(trust) => {
                assert!(result.all_delivered(), "{what}");
                let tls = result.tls.as_ref().unwrap_or_else(|| panic!("{what}"));
                assert_eq!(tls.certificate.trust, trust, "{what}");
                assert_eq!(hop.messages(), vec![(true, MESSAGE.to_vec())], "{what}");
            }
            Retry => {
                assert!(result.all_delivered() && result.plaintext_retry, "{what}");
                assert_eq!(hop.connections(), 2, "{what}");
                assert_eq!(hop.messages(), vec![(false, MESSAGE.to_vec())], "{what}");
            }
            Defer(status, result_type) => {
                assert!(result.is_deferred(), "{what}");
                let failure = result.failure.as_ref().unwrap_or_else(|| panic!("{what}"));
                assert_eq!(failure.status.to_string(), status, "{what}");
                assert_eq!(failure.result_type, Some(result_type), "{what}");
                assert!(!failure.permanent, "{what}");
                assert!(hop.messages().is_empty(), "{what}");
            }
        }
        let plaintext = hop.plaintext();
        if mode.always_requires_tls() {
            // DESIGN section 3: never MAIL nor a message byte in plaintext once policy requires TLS.
            assert!(
                !plaintext.contains("MAIL FROM"),
                "{case}/{mode}: MAIL in plaintext: {plaintext:?}"
            );
            assert!(
                !plaintext.contains("Subject: test"),
                "{case}/{mode}: content in plaintext"
            );
        }
        if mode == ClientTlsMode::None {
            assert!(
                !plaintext.contains("STARTTLS"),
                "{case}/{mode}: STARTTLS sent: {plaintext:?}"
            );
        }
    }
}

const NO_TLS: Expect = Defer("4.7.4", ResultType::StarttlsNotSupported);
const BROKEN: Expect = Defer("4.7.5", ResultType::ValidationFailure);

fn cert_hop(pem: &Pem) -> HopConfig {
    HopConfig::tls(pem)
}

#[tokio::test]
async fn starttls_not_offered() {
    let mut hop = cert_hop(&fixtures().good);
    hop.advertise_starttls = false;
    run_case(
        "no STARTTLS",
        hop,
        AfterStartTls::Discard,
        [Plain, Plain, NO_TLS, NO_TLS, NO_TLS, NO_TLS],
    )
    .await;
}

#[tokio::test]
async fn starttls_refused() {
    // Whatever the refusal's code, a TLS-required mode defers with our own 4.7.4 (a forged 5xx never bounces).
    for reply in [
        "454 4.7.0 TLS not available due to temporary reason\r\n",
        "502 5.5.1 Error: command not implemented\r\n",
        "554 5.7.0 No\r\n",
    ] {
        let mut hop = cert_hop(&fixtures().good);
        hop.starttls_reply = Some(reply);
        run_case(
            &format!("STARTTLS refused {}", &reply[..3]),
            hop,
            AfterStartTls::Discard,
            [Plain, Plain, NO_TLS, NO_TLS, NO_TLS, NO_TLS],
        )
        .await;
    }
}

#[tokio::test]
async fn handshake_broken() {
    let mut hop = cert_hop(&fixtures().good);
    hop.after_ready = AfterReady::Garbage;
    run_case(
        "handshake broken",
        hop,
        AfterStartTls::Discard,
        [Plain, Retry, BROKEN, BROKEN, BROKEN, BROKEN],
    )
    .await;
}

#[tokio::test]
async fn self_signed_certificate() {
    let untrusted = Defer("4.7.5", ResultType::CertificateNotTrusted);
    let expect = [
        Plain,
        Tls(PeerTrust::Untrusted),
        Tls(PeerTrust::Untrusted),
        untrusted,
        untrusted,
        BROKEN,
    ];
    run_case(
        "self-signed",
        cert_hop(&fixtures().self_signed),
        AfterStartTls::Discard,
        expect,
    )
    .await;
}

#[tokio::test]
async fn expired_certificate() {
    let expired = Defer("4.7.5", ResultType::CertificateExpired);
    let expect = [
        Plain,
        Tls(PeerTrust::Untrusted),
        Tls(PeerTrust::Untrusted),
        expired,
        expired,
        BROKEN,
    ];
    run_case(
        "expired",
        cert_hop(&fixtures().expired),
        AfterStartTls::Discard,
        expect,
    )
    .await;
}

#[tokio::test]
async fn wrong_name_certificate() {
    let mismatch = Defer("4.7.5", ResultType::CertificateHostMismatch);
    let expect = [
        Plain,
        Tls(PeerTrust::Trusted),
        Tls(PeerTrust::Trusted),
        mismatch,
        mismatch,
        BROKEN,
    ];
    run_case(
        "wrong name",
        cert_hop(&fixtures().wrong_name),
        AfterStartTls::Discard,
        expect,
    )
    .await;
}

#[tokio::test]
async fn ca_signed_certificate() {
    let v = Tls(PeerTrust::Verified);
    run_case(
        "CA-signed",
        cert_hop(&fixtures().good),
        AfterStartTls::Discard,
        [Plain, v, v, v, v, v],
    )
    .await;
}

const INJECTED: &[u8] = b"250 2.0.0 injected reply\r\n250-mx.example.org\r\n250 STARTTLS\r\n";

#[tokio::test]
async fn bytes_after_ready_discarded() {
    let mut hop = cert_hop(&fixtures().good);
    hop.inject_after_ready = Some(INJECTED);
    let v = Tls(PeerTrust::Verified);
    run_case(
        "injection (discard)",
        hop.clone(),
        AfterStartTls::Discard,
        [Plain, v, v, v, v, v],
    )
    .await;

    // The discarded bytes are counted and reported, never read as replies.
    let hop = start_hop(hop).await;
    let destination = Destination::new(
        vec![hop.addr],
        NextHop::parse("example.org").unwrap(),
        Some(common::MX.parse().unwrap()),
    );
    let envelope = Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        [ForwardPath::parse("<bob@example.org>").unwrap()],
    );
    let result = client(AfterStartTls::Discard)
        .deliver(
            &destination,
            &envelope,
            MESSAGE,
            &policy(ClientTlsMode::Verify),
        )
        .await;
    assert!(result.all_delivered(), "{result:#?}");
    assert_eq!(
        result.tls.unwrap().discarded_before_handshake,
        INJECTED.len() as u64
    );
}

#[tokio::test]
async fn bytes_after_ready_abort() {
    let mut hop = cert_hop(&fixtures().good);
    hop.inject_after_ready = Some(INJECTED);
    let abort = Defer("4.7.0", ResultType::ValidationFailure);
    run_case(
        "injection (close)",
        hop,
        AfterStartTls::Close,
        [Plain, Retry, abort, abort, abort, abort],
    )
    .await;
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        [ForwardPath::parse("<bob@example.org>").unwrap()],
    )
}

#[tokio::test]
async fn secure_matches_the_next_hop_not_the_mx_name() {
    // The MX certificate is valid for mx.example.org, but the destination is example.com: `verify` trusts the
    // MX name (as a spoofed MX answer would have it), `secure` wants example.com and defers.
    let hop = start_hop(cert_hop(&fixtures().good)).await;
    let destination = Destination::new(
        vec![hop.addr],
        NextHop::parse("example.com").unwrap(),
        Some(common::MX.parse().unwrap()),
    );
    let c = client(AfterStartTls::Discard);
    let verify = c
        .deliver(
            &destination,
            &envelope(),
            MESSAGE,
            &policy(ClientTlsMode::Verify),
        )
        .await;
    assert!(verify.all_delivered(), "{verify:#?}");
    let secure = c
        .deliver(
            &destination,
            &envelope(),
            MESSAGE,
            &policy(ClientTlsMode::Secure),
        )
        .await;
    assert!(secure.is_deferred(), "{secure:#?}");
    let failure = secure.failure.expect("failure");
    assert_eq!(failure.status.to_string(), "4.7.5");
    assert_eq!(
        failure.result_type,
        Some(ResultType::CertificateHostMismatch)
    );
    assert_eq!(hop.messages().len(), 1);
    assert!(!hop.plaintext().contains("MAIL FROM"));
}

#[tokio::test]
async fn next_address_after_a_refused_connection() {
    // A port with nothing listening, then a working next hop.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let hop = start_hop(cert_hop(&fixtures().good)).await;
    let destination = Destination::new(
        vec![closed, hop.addr],
        NextHop::parse("example.org").unwrap(),
        Some(common::MX.parse().unwrap()),
    );
    let result = client(AfterStartTls::Discard)
        .deliver(
            &destination,
            &envelope(),
            MESSAGE,
            &policy(ClientTlsMode::Verify),
        )
        .await;
    assert!(result.all_delivered(), "{result:#?}");
    assert_eq!(result.server, Some(hop.addr));
    assert_eq!(
        result.tls.as_ref().map(|t| t.certificate.trust),
        Some(PeerTrust::Verified)
    );
    let explanation = &result.tls.unwrap().explanation;
    assert!(explanation.contains("default: verify"), "{explanation}");
}

#[tokio::test]
async fn the_policy_failure_outranks_an_unreachable_address() {
    // A next hop without STARTTLS under `encrypt`, then a port with nothing
    // listening: the recorded failure is the TLS policy's 4.7.4, not the
    // refused connection that came last.
    let mut config = cert_hop(&fixtures().good);
    config.advertise_starttls = false;
    let hop = start_hop(config).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let destination = Destination::new(
        vec![hop.addr, closed],
        NextHop::parse("example.org").unwrap(),
        Some(common::MX.parse().unwrap()),
    );
    let result = client(AfterStartTls::Discard)
        .deliver(
            &destination,
            &envelope(),
            MESSAGE,
            &policy(ClientTlsMode::Encrypt),
        )
        .await;
    assert!(result.is_deferred(), "{result:#?}");
    let failure = result.failure.as_ref().expect("a failure");
    assert_eq!(failure.status.to_string(), "4.7.4", "{result:#?}");
    assert_eq!(
        failure.result_type,
        Some(ResultType::StarttlsNotSupported),
        "{result:#?}"
    );
    assert_eq!(result.server, Some(hop.addr));
    assert!(!hop.plaintext().contains("MAIL FROM"));
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts and never greets: the reply deadline defers the message with 4.4.2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let mut c = client(AfterStartTls::Discard);
    let mut settings = c.settings().clone();
    settings.smtp.timeouts.command = Duration::from_millis(300);
    c = Client::new(
        settings,
        Arc::new(ClientTlsContext::new(fixtures().ca.roots())),
    );
    let destination = Destination::new(vec![addr], NextHop::parse("example.org").unwrap(), None);
    let started = std::time::Instant::now();
    let result = c
        .deliver(
            &destination,
            &envelope(),
            MESSAGE,
            &policy(ClientTlsMode::Opportunistic),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(result.is_deferred(), "{result:#?}");
    assert_eq!(result.failure.expect("failure").status.to_string(), "4.4.2");
    holder.abort();
}
