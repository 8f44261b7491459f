//! The outbound outcome matrix of the design (docs/policy.md, "Outbound outcome
//! matrix"): one test per row and mode.
//!
//! Columns: none, opportunistic, encrypt, verify — and secure and fingerprint,
//! which follow the verify column.

use postern_policy::{
    Action, CertificateCheck, CertificateFailure, ClientTlsMode, Close, DestinationPolicy,
    Fingerprint, HandshakeOutcome, NextHop, OutboundPolicy, PeerTrust, ResultType, SessionFacts,
    TlsVersion,
};

/// What a cell of the matrix says.
#[derive(Debug)]
enum Expect {
    /// Deliver in plaintext on this connection.
    Plaintext,
    /// Deliver over TLS.
    Tls,
    /// Retry on a new plaintext connection.
    Retry,
    /// Defer with this code and result type, closing this way.
    Defer(&'static str, ResultType, Close),
}

fn policy(mode: ClientTlsMode) -> OutboundPolicy {
    let mut default = DestinationPolicy::new(mode);
    if mode == ClientTlsMode::Fingerprint {
        default.pins = vec![Fingerprint([0x42; 32])];
    }
    OutboundPolicy::new(default)
}

fn check(mode: ClientTlsMode, facts: SessionFacts, expect: Expect) {
    let hop = NextHop::parse("example.com").unwrap();
    let mx = "mx.example.com".parse().unwrap();
    let decision = policy(mode).connection(&hop, Some(&mx)).evaluate(&facts);
    let explained = decision.to_string();
    match (&expect, &decision.action) {
        (Plaintext, Action::ContinuePlaintext)
        | (Tls, Action::ContinueTls)
        | (Retry, Action::RetryPlaintextNewConnection) => {}
        (Defer(code, result_type, close), Action::Defer(failure)) => {
            assert_eq!(failure.status.to_string(), *code, "{explained}");
            assert_eq!(failure.result_type, *result_type, "{explained}");
            assert_eq!(failure.close, *close, "{explained}");
            assert!(!failure.status.is_permanent(), "{explained}");
        }
        _ => panic!("{mode}: expected {expect:?}, got {explained}"),
    }
    assert!(
        explained.starts_with(&format!("default: {mode} → ")),
        "{explained}"
    );
}

fn not_offered() -> SessionFacts {
    SessionFacts::default().with_starttls_offered(false)
}

fn refused(code: u16) -> SessionFacts {
    SessionFacts::default()
        .with_starttls_offered(true)
        .with_starttls_reply(code)
}

fn handshake(outcome: HandshakeOutcome) -> SessionFacts {
    SessionFacts::default()
        .with_starttls_offered(true)
        .with_starttls_reply(220)
        .with_handshake(outcome)
}

fn handshake_fails() -> SessionFacts {
    handshake(HandshakeOutcome::Failed { certificate: None })
}

fn established(check: CertificateCheck) -> SessionFacts {
    handshake(HandshakeOutcome::Established {
        version: TlsVersion::Tls13,
        certificate: check,
    })
}

fn untrusted(failure: CertificateFailure) -> SessionFacts {
    established(CertificateCheck::failed(PeerTrust::Untrusted, failure))
}

fn wrong_name() -> SessionFacts {
    established(CertificateCheck::failed(
        PeerTrust::Trusted,
        CertificateFailure::HostMismatch,
    ))
}

fn bytes_after_220() -> SessionFacts {
    SessionFacts::default()
        .with_starttls_offered(true)
        .with_starttls_reply(220)
        .with_bytes_after_starttls_reply()
}

use ClientTlsMode::{Encrypt, Fingerprint as Pinned, None as NoTls, Opportunistic, Secure, Verify};
use Expect::{Defer, Plaintext, Retry, Tls};

macro_rules! matrix {
    ($($name:ident: $mode:expr, $facts:expr => $expect:expr;)*) => {$(
        #[test]
        fn $name() {
            check($mode, $facts, $expect);
        }
    )*};
}

const NOT_SUPPORTED: ResultType = ResultType::StarttlsNotSupported;
const VALIDATION: ResultType = ResultType::ValidationFailure;
const NOT_TRUSTED: ResultType = ResultType::CertificateNotTrusted;
const EXPIRED: ResultType = ResultType::CertificateExpired;
const MISMATCH: ResultType = ResultType::CertificateHostMismatch;

matrix! {
    // Row 1: STARTTLS not offered.
    not_offered_none: NoTls, not_offered() => Plaintext;
    not_offered_opportunistic: Opportunistic, not_offered() => Plaintext;
    not_offered_encrypt: Encrypt, not_offered() => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    not_offered_verify: Verify, not_offered() => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    not_offered_secure: Secure, not_offered() => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    not_offered_fingerprint: Pinned, not_offered() => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);

    // Row 2: STARTTLS refused (non-2xx). `none` never sends STARTTLS.
    refused_none: NoTls, refused(454) => Plaintext;
    refused_454_opportunistic: Opportunistic, refused(454) => Plaintext;
    refused_554_opportunistic: Opportunistic, refused(554) => Plaintext;
    refused_454_encrypt: Encrypt, refused(454) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_502_encrypt: Encrypt, refused(502) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_554_encrypt: Encrypt, refused(554) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_354_encrypt: Encrypt, refused(354) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_454_verify: Verify, refused(454) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_502_verify: Verify, refused(502) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_554_verify: Verify, refused(554) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_354_verify: Verify, refused(354) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_554_secure: Secure, refused(554) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);
    refused_554_fingerprint: Pinned, refused(554) => Defer("4.7.4", NOT_SUPPORTED, Close::Quit);

    // Row 3: the handshake fails.
    handshake_fails_none: NoTls, handshake_fails() => Plaintext;
    handshake_fails_opportunistic: Opportunistic, handshake_fails() => Retry;
    handshake_fails_encrypt: Encrypt, handshake_fails() => Defer("4.7.5", VALIDATION, Close::Drop);
    handshake_fails_verify: Verify, handshake_fails() => Defer("4.7.5", VALIDATION, Close::Drop);
    handshake_fails_secure: Secure, handshake_fails() => Defer("4.7.5", VALIDATION, Close::Drop);
    handshake_fails_fingerprint: Pinned, handshake_fails() => Defer("4.7.5", VALIDATION, Close::Drop);

    // Row 4: self-signed / unknown CA / expired.
    untrusted_none: NoTls, untrusted(CertificateFailure::NotTrusted) => Plaintext;
    untrusted_opportunistic: Opportunistic, untrusted(CertificateFailure::NotTrusted) => Tls;
    expired_opportunistic: Opportunistic, untrusted(CertificateFailure::Expired) => Tls;
    untrusted_encrypt: Encrypt, untrusted(CertificateFailure::NotTrusted) => Tls;
    expired_encrypt: Encrypt, untrusted(CertificateFailure::Expired) => Tls;
    untrusted_verify: Verify, untrusted(CertificateFailure::NotTrusted) => Defer("4.7.5", NOT_TRUSTED, Close::Quit);
    expired_verify: Verify, untrusted(CertificateFailure::Expired) => Defer("4.7.5", EXPIRED, Close::Quit);
    untrusted_secure: Secure, untrusted(CertificateFailure::NotTrusted) => Defer("4.7.5", NOT_TRUSTED, Close::Quit);
    pin_mismatch_fingerprint: Pinned, untrusted(CertificateFailure::PinMismatch) => Defer("4.7.5", VALIDATION, Close::Quit);

    // Row 5: trusted certificate, wrong name.
    wrong_name_none: NoTls, wrong_name() => Plaintext;
    wrong_name_opportunistic: Opportunistic, wrong_name() => Tls;
    wrong_name_encrypt: Encrypt, wrong_name() => Tls;
    wrong_name_verify: Verify, wrong_name() => Defer("4.7.5", MISMATCH, Close::Quit);
    wrong_name_secure: Secure, wrong_name() => Defer("4.7.5", MISMATCH, Close::Quit);

    // Row 6: bytes after the 220 to STARTTLS (the engine aborted rather than discarded).
    bytes_after_220_none: NoTls, bytes_after_220() => Plaintext;
    bytes_after_220_opportunistic: Opportunistic, bytes_after_220() => Retry;
    bytes_after_220_encrypt: Encrypt, bytes_after_220() => Defer("4.7.0", VALIDATION, Close::Drop);
    bytes_after_220_verify: Verify, bytes_after_220() => Defer("4.7.0", VALIDATION, Close::Drop);
    bytes_after_220_secure: Secure, bytes_after_220() => Defer("4.7.0", VALIDATION, Close::Drop);

    // A verified peer is delivered to in every TLS mode.
    verified_opportunistic: Opportunistic, established(CertificateCheck::verified()) => Tls;
    verified_encrypt: Encrypt, established(CertificateCheck::verified()) => Tls;
    verified_verify: Verify, established(CertificateCheck::verified()) => Tls;
    verified_secure: Secure, established(CertificateCheck::verified()) => Tls;
    verified_fingerprint: Pinned, established(CertificateCheck::verified()) => Tls;
}

#[test]
fn below_minimum_version_is_a_handshake_failure() {
    let hop = NextHop::parse("example.com").unwrap();
    for (mode, retry) in [(Opportunistic, true), (Verify, false)] {
        let mut default = DestinationPolicy::new(mode);
        default.min_tls_version = TlsVersion::Tls13;
        let attempt = OutboundPolicy::new(default).connection(&hop, None);
        let decision = attempt.on_handshake(HandshakeOutcome::Established {
            version: TlsVersion::Tls12,
            certificate: CertificateCheck::verified(),
        });
        if retry {
            assert_eq!(decision.action, Action::RetryPlaintextNewConnection);
        } else {
            assert!(matches!(decision.action, Action::Defer(_)), "{decision}");
        }
        assert!(
            decision
                .reason
                .contains("TLSv1.2 below the minimum TLSv1.3"),
            "{decision}"
        );
    }
}

#[test]
fn certificate_refused_inside_the_handshake_keeps_its_result_type() {
    let hop = NextHop::parse("example.com").unwrap();
    let attempt = policy(Verify).connection(&hop, None);
    let decision = attempt.on_handshake(HandshakeOutcome::Failed {
        certificate: Some(CertificateFailure::Expired),
    });
    assert_eq!(decision.result_type(), Some(ResultType::CertificateExpired));
    assert!(matches!(decision.action, Action::Defer(_)));
}
