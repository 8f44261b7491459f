//! Outbound decisions under DANE (RFC 7672), MTA-STS (RFC 8461) and REQUIRETLS
//! (RFC 8689).

use postern_policy::dane::LookupFailure;
use postern_policy::tlsrpt::PolicyType;
use postern_policy::{
    Action, Authentication, Basis, CertificateCheck, CertificateFailure, ClientTlsMode,
    ConnectionPolicy, DaneOutcome, DestinationPolicy, DomainName, HandshakeOutcome, MessageTls,
    NamePattern, NextHop, OutboundPolicy, PeerTrust, ResultType, SessionFacts, StsPolicy,
    TlsRequirement, TlsVersion, TlsaLookup, TlsaRecord,
};

const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn name(s: &str) -> DomainName {
    s.parse().unwrap()
}

fn attempt(mode: ClientTlsMode, mx: &str) -> ConnectionPolicy {
    OutboundPolicy::new(DestinationPolicy::new(mode))
        .connection(&NextHop::parse("example.com").unwrap(), Some(&name(mx)))
}

fn usable() -> DaneOutcome {
    DaneOutcome::from_lookup(TlsaLookup::Secure(vec![
        format!("3 1 1 {SHA256}").parse::<TlsaRecord>().unwrap(),
    ]))
}

fn unusable_only() -> DaneOutcome {
    DaneOutcome::from_lookup(TlsaLookup::Secure(vec![
        format!("1 1 1 {SHA256}").parse::<TlsaRecord>().unwrap(),
    ]))
}

fn established(check: CertificateCheck) -> HandshakeOutcome {
    HandshakeOutcome::Established {
        version: TlsVersion::Tls13,
        certificate: check,
    }
}

fn dane_mismatch() -> CertificateCheck {
    CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::DaneMismatch)
}

fn defer_type(action: &Action) -> Option<(String, ResultType)> {
    match action {
        Action::Defer(f) => Some((f.status.to_string(), f.result_type)),
        _ => None,
    }
}

// --- DANE (RFC 7672 §2.2) -------------------------------------------------------

#[test]
fn dane_usable_records_authenticate_without_fallback() {
    let a = attempt(ClientTlsMode::Dane, "mx.example.com").with_dane(usable());
    assert!(matches!(
        a.requirement(),
        TlsRequirement::Authenticated(Authentication::Dane(ref r)) if r.len() == 1
    ));
    assert_eq!(
        a.on_ehlo(false).action.failure().unwrap().result_type,
        ResultType::StarttlsNotSupported
    );
    let d = a.on_handshake(established(dane_mismatch()));
    assert_eq!(
        defer_type(&d.action),
        Some(("4.7.5".into(), ResultType::TlsaInvalid))
    );
    assert_eq!(
        d.to_string(),
        "default: dane (dane) → defer 4.7.5 tlsa-invalid (no usable TLSA record matched)"
    );
    assert_eq!(
        a.on_handshake(established(CertificateCheck::verified()))
            .action,
        Action::ContinueTls
    );
    assert_eq!(a.report_policy().policy_type, PolicyType::Tlsa);
    assert_eq!(a.report_policy().policy_string, [format!("3 1 1 {SHA256}")]);
}

#[test]
fn dane_records_but_none_usable_means_encrypt() {
    let a = attempt(ClientTlsMode::Dane, "mx.example.com").with_dane(unusable_only());
    assert_eq!(a.requirement(), TlsRequirement::Encrypt);
    assert!(a.on_ehlo(false).action.failure().is_some());
    let untrusted = CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
    assert_eq!(
        a.on_handshake(established(untrusted)).action,
        Action::ContinueTls
    );
}

#[test]
fn dane_no_records_means_opportunistic() {
    let a = attempt(ClientTlsMode::Dane, "mx.example.com")
        .with_dane(DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords));
    assert_eq!(a.requirement(), TlsRequirement::Opportunistic);
    assert_eq!(a.on_ehlo(false).action, Action::ContinuePlaintext);
    assert_eq!(
        a.on_handshake(HandshakeOutcome::Failed { certificate: None })
            .action,
        Action::RetryPlaintextNewConnection
    );
}

#[test]
fn opportunistic_with_a_dane_outcome_is_opportunistic_dane() {
    // An MTA that looked the TLSA records up for an opportunistic destination
    // upgrades it (Exim's default): usable records authenticate, with no fallback.
    let a = attempt(ClientTlsMode::Opportunistic, "mx.example.com").with_dane(usable());
    assert!(matches!(
        a.requirement(),
        TlsRequirement::Authenticated(Authentication::Dane(ref r)) if r.len() == 1
    ));
    assert!(a.on_ehlo(false).action.failure().is_some());
    assert_eq!(
        defer_type(&a.on_handshake(established(dane_mismatch())).action),
        Some(("4.7.5".into(), ResultType::TlsaInvalid))
    );
    assert_eq!(a.report_policy().policy_type, PolicyType::Tlsa);
    // Unusable records only: mandatory unauthenticated TLS.
    let a = attempt(ClientTlsMode::Opportunistic, "mx.example.com").with_dane(unusable_only());
    assert_eq!(a.requirement(), TlsRequirement::Encrypt);
    // A failed lookup defers, as under `dane`.
    let a = attempt(ClientTlsMode::Opportunistic, "mx.example.com").with_dane(
        DaneOutcome::from_lookup(TlsaLookup::Failed(LookupFailure::Bogus)),
    );
    assert!(a.before_connect().action.failure().is_some());
    // No records, or no outcome supplied: plain opportunistic TLS.
    for a in [
        attempt(ClientTlsMode::Opportunistic, "mx.example.com")
            .with_dane(DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords)),
        attempt(ClientTlsMode::Opportunistic, "mx.example.com"),
    ] {
        assert_eq!(a.requirement(), TlsRequirement::Opportunistic);
        assert_eq!(a.on_ehlo(false).action, Action::ContinuePlaintext);
    }
    // `none` never looks at DANE.
    let a = attempt(ClientTlsMode::None, "mx.example.com").with_dane(usable());
    assert_eq!(a.requirement(), TlsRequirement::Plaintext);
}

#[test]
fn dane_lookup_failure_makes_the_host_unusable_never_no_dane() {
    for failure in [LookupFailure::Bogus, LookupFailure::Indeterminate] {
        for mode in [ClientTlsMode::Dane, ClientTlsMode::DaneOnly] {
            let a = attempt(mode, "mx.example.com")
                .with_dane(DaneOutcome::from_lookup(TlsaLookup::Failed(failure)));
            let d = a.before_connect();
            assert_eq!(
                defer_type(&d.action),
                Some(("4.7.5".into(), ResultType::DnssecInvalid)),
                "{d}"
            );
            // Even if the engine connected anyway, it must not go plaintext.
            assert!(a.on_ehlo(false).action.failure().is_some());
        }
    }
    // No DANE answer given at all is not "no DANE" either.
    let d = attempt(ClientTlsMode::Dane, "mx.example.com").before_connect();
    assert!(d.action.failure().is_some(), "{d}");
}

#[test]
fn dane_only_needs_usable_records() {
    for outcome in [
        unusable_only(),
        DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords),
    ] {
        let d = attempt(ClientTlsMode::DaneOnly, "mx.example.com")
            .with_dane(outcome)
            .before_connect();
        assert_eq!(
            defer_type(&d.action),
            Some(("4.7.5".into(), ResultType::DaneRequired))
        );
    }
    let a = attempt(ClientTlsMode::DaneOnly, "mx.example.com").with_dane(usable());
    assert_eq!(a.before_connect().action, Action::Connect);
}

// --- MTA-STS (RFC 8461 §5) ------------------------------------------------------

fn sts(mode: &str) -> StsPolicy {
    StsPolicy::parse(&format!(
        "version: STSv1\nmode: {mode}\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"
    ))
    .unwrap()
}

#[test]
fn sts_enforce_requires_mx_match_and_pkix() {
    let a = attempt(ClientTlsMode::MtaSts, "mail.example.com").with_mta_sts(Some(sts("enforce")));
    assert_eq!(
        a.requirement(),
        TlsRequirement::Authenticated(Authentication::Pkix {
            names: vec![NamePattern::Exact(name("mail.example.com"))]
        })
    );
    assert_eq!(a.before_connect().action, Action::Connect);
    let d = a.on_ehlo(false);
    assert_eq!(
        defer_type(&d.action),
        Some(("4.7.4".into(), ResultType::StarttlsNotSupported))
    );
    let wrong = CertificateCheck::failed(PeerTrust::Trusted, CertificateFailure::HostMismatch);
    let d = a.on_handshake(established(wrong));
    assert_eq!(
        defer_type(&d.action),
        Some(("4.7.5".into(), ResultType::CertificateHostMismatch))
    );
    assert_eq!(d.basis, Basis::MtaSts);
    assert_eq!(a.report_policy().policy_type, PolicyType::Sts);
    assert_eq!(
        a.report_policy().mx_host,
        ["mail.example.com", "*.example.net"]
    );

    // An MX not in the policy is not used (§4.1: one label for a wildcard).
    let off = attempt(ClientTlsMode::MtaSts, "a.b.example.net").with_mta_sts(Some(sts("enforce")));
    let d = off.before_connect();
    assert_eq!(
        defer_type(&d.action),
        Some(("4.7.5".into(), ResultType::ValidationFailure))
    );
    assert!(d.reason.contains("not in the MTA-STS policy"));
}

#[test]
fn sts_testing_reports_but_delivers() {
    let a = attempt(ClientTlsMode::MtaSts, "mail.example.com").with_mta_sts(Some(sts("testing")));
    assert!(!a.enforced());
    let d = a.on_ehlo(false);
    assert_eq!(d.action, Action::ContinuePlaintext);
    assert_eq!(d.report_only, Some(ResultType::StarttlsNotSupported));
    let untrusted = CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
    let d = a.on_handshake(established(untrusted));
    assert_eq!(d.action, Action::ContinueTls);
    assert_eq!(d.result_type(), Some(ResultType::CertificateNotTrusted));
    let d = a.on_handshake(HandshakeOutcome::Failed { certificate: None });
    assert_eq!(d.action, Action::RetryPlaintextNewConnection);
    // MX mismatch: connect anyway (and still try STARTTLS), reporting it.
    let off =
        attempt(ClientTlsMode::MtaSts, "other.example.org").with_mta_sts(Some(sts("testing")));
    let d = off.before_connect();
    assert_eq!(
        (d.action, d.report_only),
        (Action::Connect, Some(ResultType::ValidationFailure))
    );
    assert_eq!(off.on_ehlo(true).action, Action::StartTls);
}

#[test]
fn sts_none_or_absent_is_as_without_mta_sts() {
    for policy in [Some(sts("none")), None] {
        let a = attempt(ClientTlsMode::MtaSts, "mail.example.com").with_mta_sts(policy);
        assert_eq!(a.requirement(), TlsRequirement::Opportunistic);
        assert_eq!(a.on_ehlo(false).action, Action::ContinuePlaintext);
    }
}

#[test]
fn dane_takes_precedence_over_mta_sts() {
    // RFC 8461 §2: MTA-STS must not override a failing DANE validation.
    let a = attempt(ClientTlsMode::MtaSts, "mail.example.com")
        .with_dane(usable())
        .with_mta_sts(Some(sts("enforce")));
    let d = a.on_handshake(established(dane_mismatch()));
    assert_eq!(
        defer_type(&d.action),
        Some(("4.7.5".into(), ResultType::TlsaInvalid))
    );
    // With dane mode and no TLSA records, the MTA-STS policy applies.
    let a = attempt(ClientTlsMode::Dane, "mail.example.com")
        .with_dane(DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords))
        .with_mta_sts(Some(sts("enforce")));
    assert_eq!(
        a.on_ehlo(false).action.failure().unwrap().result_type,
        ResultType::StarttlsNotSupported
    );
}

#[test]
fn only_unusable_tlsa_records_require_tls_in_every_dane_using_mode() {
    // RFC 7672 §2.2: TLS mandatory, not authenticated; an enforced MTA-STS
    // policy (PKIX for the MX host) is stronger and still applies, a
    // `testing` one or none is weaker and gives way.
    for mode in [
        ClientTlsMode::Dane,
        ClientTlsMode::Opportunistic,
        ClientTlsMode::MtaSts,
    ] {
        for policy in [None, Some(sts("testing")), Some(sts("none"))] {
            let a = attempt(mode, "mail.example.com")
                .with_dane(unusable_only())
                .with_mta_sts(policy.clone());
            assert_eq!(
                a.requirement(),
                TlsRequirement::Encrypt,
                "{mode:?} {policy:?}"
            );
            assert!(a.requires_tls(), "{mode:?} {policy:?}");
            assert_eq!(
                a.on_ehlo(false).action.failure().map(|f| f.result_type),
                Some(ResultType::StarttlsNotSupported),
                "{mode:?} {policy:?}"
            );
        }
        let a = attempt(mode, "mail.example.com")
            .with_dane(unusable_only())
            .with_mta_sts(Some(sts("enforce")));
        assert_eq!(
            a.requirement(),
            TlsRequirement::Authenticated(Authentication::Pkix {
                names: vec![NamePattern::Exact(name("mail.example.com"))],
            }),
            "{mode:?}"
        );
    }
}

#[test]
fn mta_sts_mode_never_reads_a_failed_dane_lookup_as_no_dane() {
    // RFC 7672 §2.1: a TLSA lookup that fails or is bogus is not "no DANE",
    // and RFC 8461 §2: MTA-STS must not override DANE. A DANE outcome
    // supplied under `mta-sts` is judged as under `dane` and `opportunistic`.
    for failure in [LookupFailure::Bogus, LookupFailure::Indeterminate] {
        for policy in [None, Some(sts("enforce")), Some(sts("testing"))] {
            let a = attempt(ClientTlsMode::MtaSts, "mail.example.com")
                .with_dane(DaneOutcome::from_lookup(TlsaLookup::Failed(failure)))
                .with_mta_sts(policy.clone());
            let d = a.before_connect();
            assert_eq!(
                defer_type(&d.action),
                Some(("4.7.5".into(), ResultType::DnssecInvalid)),
                "{failure:?} {policy:?}: {d}"
            );
            assert!(a.on_ehlo(false).action.failure().is_some());
        }
    }
}

// --- REQUIRETLS (RFC 8689) ------------------------------------------------------

#[test]
fn requiretls_upgrades_opportunistic_and_bounces_5_7_30() {
    let a = attempt(ClientTlsMode::Opportunistic, "mx.example.com")
        .with_message(MessageTls::RequireTls)
        .with_secure_mx(true);
    assert!(matches!(
        a.requirement(),
        TlsRequirement::Authenticated(Authentication::Pkix { .. })
    ));
    let d = a.on_ehlo(false);
    match &d.action {
        Action::Bounce(f) => {
            assert_eq!(f.status.to_string(), "5.7.30");
            assert_eq!(f.result_type, ResultType::StarttlsNotSupported);
        }
        other => panic!("{other:?}"),
    }
    let untrusted = CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
    assert!(matches!(
        a.on_handshake(established(untrusted)).action,
        Action::Bounce(_)
    ));
    // Verified TLS, but REQUIRETLS not advertised after STARTTLS.
    let facts = SessionFacts::default()
        .with_starttls_offered(true)
        .with_starttls_reply(220)
        .with_handshake(established(CertificateCheck::verified()))
        .with_requiretls_advertised(false);
    let d = a.evaluate(&facts);
    assert!(
        matches!(&d.action, Action::Bounce(f) if f.status.to_string() == "5.7.30"),
        "{d}"
    );
    assert_eq!(
        a.evaluate(&facts.with_requiretls_advertised(true)).action,
        Action::ContinueTls
    );
}

#[test]
fn requiretls_needs_a_securely_found_mx() {
    let insecure =
        attempt(ClientTlsMode::Verify, "mx.example.com").with_message(MessageTls::RequireTls);
    assert!(matches!(
        insecure.before_connect().action,
        Action::Bounce(_)
    ));
    // An MTA-STS policy listing the MX counts as secure.
    let sts_ok = attempt(ClientTlsMode::MtaSts, "mail.example.com")
        .with_mta_sts(Some(sts("enforce")))
        .with_message(MessageTls::RequireTls);
    assert_eq!(sts_ok.before_connect().action, Action::Connect);
    // A [host]:port route is configured, not looked up.
    let routed = OutboundPolicy::default()
        .connection(&NextHop::parse("[relay.example.net]:25").unwrap(), None)
        .with_message(MessageTls::RequireTls);
    assert_eq!(routed.before_connect().action, Action::Connect);
    // Encrypt-only is not enough for REQUIRETLS (a verified certificate is needed).
    let enc = attempt(ClientTlsMode::Encrypt, "mx.example.com")
        .with_message(MessageTls::RequireTls)
        .with_secure_mx(true);
    let untrusted = CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
    assert!(matches!(
        enc.on_handshake(established(untrusted)).action,
        Action::Bounce(_)
    ));
}

#[test]
fn tls_required_no_relaxes_dane_and_mta_sts_only() {
    let a = attempt(ClientTlsMode::MtaSts, "mail.example.com")
        .with_mta_sts(Some(sts("enforce")))
        .with_message(MessageTls::TlsOptional);
    assert_eq!(a.requirement(), TlsRequirement::Opportunistic);
    assert_eq!(a.on_ehlo(false).action, Action::ContinuePlaintext);
    assert_eq!(a.on_ehlo(true).action, Action::StartTls);
    let d = attempt(ClientTlsMode::DaneOnly, "mx.example.com")
        .with_dane(usable())
        .with_message(MessageTls::TlsOptional)
        .on_ehlo(false);
    assert_eq!(d.action, Action::ContinuePlaintext);
    assert_eq!(d.basis, Basis::TlsRequiredNo);
    // A locally configured verify stays.
    let local =
        attempt(ClientTlsMode::Verify, "mx.example.com").with_message(MessageTls::TlsOptional);
    assert!(local.on_ehlo(false).action.failure().is_some());
}

// --- Names to match -------------------------------------------------------------

#[test]
fn verify_matches_the_mx_host_and_secure_the_next_hop() {
    let verify = attempt(ClientTlsMode::Verify, "mx.provider.example");
    assert_eq!(
        verify.requirement(),
        TlsRequirement::Authenticated(Authentication::Pkix {
            names: vec![NamePattern::Exact(name("mx.provider.example"))]
        })
    );
    let secure = attempt(ClientTlsMode::Secure, "mx.provider.example");
    let TlsRequirement::Authenticated(Authentication::Pkix { names }) = secure.requirement() else {
        panic!("secure must authenticate");
    };
    assert_eq!(
        names,
        [
            NamePattern::Exact(name("example.com")),
            NamePattern::Subdomains(name("example.com"))
        ]
    );
    assert!(names.iter().any(|p| p.matches(&name("mx.example.com"))));
    assert!(
        !names
            .iter()
            .any(|p| p.matches(&name("mx.provider.example")))
    );
    assert_eq!(secure.server_name(), Some(&name("mx.provider.example")));
}

// --- Reporting ------------------------------------------------------------------

#[test]
fn decisions_feed_tls_reports() {
    use postern_policy::tlsrpt::{DailyAggregator, ReportPeriod, SessionOutcome};
    let a = attempt(ClientTlsMode::Verify, "mx.example.com");
    let failed = a.on_handshake(HandshakeOutcome::Failed { certificate: None });
    let facts = failed.failure_facts().unwrap();
    assert_eq!(facts.result_type, Some(ResultType::ValidationFailure));
    assert_eq!(
        facts.failure_reason_code.as_deref(),
        Some("TLS handshake failed")
    );
    let ok = a.on_handshake(established(CertificateCheck::verified()));
    assert_eq!(ok.failure_facts(), None);

    let now = 1_700_000_000;
    let mut agg = DailyAggregator::new(ReportPeriod::utc_day_containing(now));
    agg.record(SessionOutcome::failure(a.report_policy(), now, facts))
        .unwrap();
    agg.record(SessionOutcome::success(a.report_policy(), now))
        .unwrap();
    let report = agg.into_report("Example", "mailto:tlsrpt@example.net", "1");
    let policy = &report.policies[0];
    assert_eq!(policy.policy.policy_type, PolicyType::NoPolicyFound);
    assert_eq!(policy.policy.policy_domain, "example.com");
    assert_eq!(policy.summary.total_successful_session_count, 1);
    assert_eq!(policy.failure_details[0].failed_session_count, 1);
}

#[test]
fn lookups_explain_themselves() {
    let mut policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Opportunistic));
    policy
        .overrides
        .insert(
            ".example.com".parse().unwrap(),
            DestinationPolicy::new(ClientTlsMode::Verify),
        )
        .unwrap();
    assert_eq!(
        policy.explain(&"A.Example.COM.".parse().unwrap()),
        "domain .example.com (override): verify"
    );
    assert_eq!(
        policy.explain(&"example.com".parse().unwrap()),
        "default: opportunistic"
    );
}
