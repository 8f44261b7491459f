//! Properties of outbound decisions that must hold for every input.

use postern_policy::{
    Action, CertificateCheck, CertificateFailure, ClientTlsMode, DestinationPolicy, Fingerprint,
    HandshakeOutcome, NextHop, OutboundPolicy, PeerTrust, SessionFacts, TlsVersion,
};
use proptest::prelude::*;

const REQUIRED: [ClientTlsMode; 4] = [
    ClientTlsMode::Encrypt,
    ClientTlsMode::Verify,
    ClientTlsMode::Secure,
    ClientTlsMode::Fingerprint,
];

fn attempt(mode: ClientTlsMode) -> postern_policy::ConnectionPolicy {
    let mut default = DestinationPolicy::new(mode);
    default.pins = vec![Fingerprint([1; 32])];
    OutboundPolicy::new(default).connection(&NextHop::parse("example.com").unwrap(), None)
}

fn check() -> impl Strategy<Value = CertificateCheck> {
    let trust = prop_oneof![
        Just(PeerTrust::Anonymous),
        Just(PeerTrust::Untrusted),
        Just(PeerTrust::Trusted),
        Just(PeerTrust::Verified),
    ];
    let failure = prop_oneof![
        Just(None),
        Just(Some(CertificateFailure::NotTrusted)),
        Just(Some(CertificateFailure::Expired)),
        Just(Some(CertificateFailure::HostMismatch)),
        Just(Some(CertificateFailure::PinMismatch)),
    ];
    (trust, failure).prop_map(|(trust, failure)| CertificateCheck::new(trust, failure))
}

fn facts() -> impl Strategy<Value = SessionFacts> {
    let outcome = prop_oneof![
        Just(None),
        Just(Some(HandshakeOutcome::Failed { certificate: None })),
        (check(), any::<bool>()).prop_map(|(certificate, v13)| Some(
            HandshakeOutcome::Established {
                version: if v13 {
                    TlsVersion::Tls13
                } else {
                    TlsVersion::Tls12
                },
                certificate,
            }
        )),
    ];
    (
        any::<bool>(),
        proptest::option::of(100u16..600),
        any::<bool>(),
        outcome,
    )
        .prop_map(|(offered, reply, bytes, handshake)| {
            let mut facts = SessionFacts::default().with_starttls_offered(offered);
            if let Some(code) = reply {
                facts = facts.with_starttls_reply(code);
            }
            if bytes {
                facts = facts.with_bytes_after_starttls_reply();
            }
            if let Some(outcome) = handshake {
                facts = facts.with_handshake(outcome);
            }
            facts
        })
}

proptest! {
    /// Under a TLS-required mode nothing is ever sent in plaintext, and nothing
    /// bounces: every failure is a temporary 4.7.x of ours.
    #[test]
    fn required_modes_never_go_plaintext_nor_bounce(mode in 0usize..4, facts in facts()) {
        let decision = attempt(REQUIRED[mode]).evaluate(&facts);
        prop_assert!(
            !matches!(decision.action, Action::ContinuePlaintext | Action::RetryPlaintextNewConnection | Action::Bounce(_)),
            "{}", decision
        );
        if let Action::Defer(failure) = &decision.action {
            prop_assert_eq!((failure.status.class(), failure.status.subject()), (4, 7));
        }
    }

    /// Every refusal of STARTTLS, whatever the code, defers with 4.7.4 under a
    /// TLS-required mode and falls back to plaintext under opportunistic.
    #[test]
    fn any_starttls_refusal(code in (100u16..1000).prop_filter("not 2xx", |c| !(200..300).contains(c)), mode in 0usize..4) {
        let decision = attempt(REQUIRED[mode]).on_starttls_reply(code);
        match decision.action {
            Action::Defer(failure) => prop_assert_eq!(failure.status.to_string(), "4.7.4"),
            other => prop_assert!(false, "{:?}", other),
        }
        prop_assert_eq!(
            attempt(ClientTlsMode::Opportunistic).on_starttls_reply(code).action,
            Action::ContinuePlaintext
        );
    }

    /// Opportunistic never defers.
    #[test]
    fn opportunistic_never_defers(facts in facts()) {
        let decision = attempt(ClientTlsMode::Opportunistic).evaluate(&facts);
        prop_assert!(decision.action.failure().is_none(), "{}", decision);
    }
}
