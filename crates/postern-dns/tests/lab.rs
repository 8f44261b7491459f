//! The DNSSEC lab: real nsd serving zones signed with ldns-signzone, real
//! unbound validating them, on loopback (tests/lab/setup.sh). Both resolver
//! modes must give the same matrix.
//!
//! Needs the Debian packages nsd, ldnsutils, unbound and bind9-dnsutils. When
//! they are missing the test installs them if it runs as root, fails if `CI`
//! is set, and otherwise skips with a message (postern-test-support's
//! `dns_lab`).
//!
//! `POSTERN_LAB_BREAK=1` inverts every expectation: the run must then report
//! every check as failed (a check that cannot fail proves nothing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use postern_dns::{
    AddressLookup, DaneResolver, Denial, DnssecStatus, TrustAdConfig, TrustAnchor, ValidatingConfig,
};
use postern_policy::dane::{LookupFailure, TlsaLookup, TlsaRecord};
use postern_test_support::dns_lab::{DnsLab, free_port};
use postern_types::DomainName;

/// The TLSA data published in tests/lab/zones (sha256 of fixed strings).
const H_MX: &str = "ec111fbfc6bfa45fb9683d5c71d5b603b763ed110b8066c94d2de7cbf487851c";
const H_CA: &str = "36a87a976c61f326df2d265fb11688428090f78ed3a00156b84dd5d2f23bbbee";
const H_ALIAS2: &str = "f1ef087fdcdcae2b7098cda87fe149ba3a98f91bfe8a8b76928e1add9fa86b7f";

/// Collects checks, so one run reports every mismatch (and, with
/// `POSTERN_LAB_BREAK=1`, shows that each check can fail).
struct Checks {
    mode: &'static str,
    broken: bool,
    total: usize,
    failed: Vec<String>,
}

impl Checks {
    fn new(mode: &'static str) -> Self {
        Self {
            mode,
            broken: std::env::var_os("POSTERN_LAB_BREAK").is_some(),
            total: 0,
            failed: Vec::new(),
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, actual: T, expected: T) {
        self.total += 1;
        if (actual == expected) == self.broken {
            self.failed.push(format!(
                "{}: {what}: got {actual:?}, expected {}{expected:?}",
                self.mode,
                if self.broken { "anything but " } else { "" }
            ));
        }
    }

    fn finish(self) {
        if self.broken {
            assert_eq!(
                self.failed.len(),
                self.total,
                "{}: with every expectation inverted, every check must fail",
                self.mode
            );
            eprintln!(
                "{}: POSTERN_LAB_BREAK: all {} checks failed as they should",
                self.mode, self.total
            );
            return;
        }
        assert!(
            self.failed.is_empty(),
            "{} of {} checks failed:\n{}",
            self.failed.len(),
            self.total,
            self.failed.join("\n")
        );
        eprintln!("{}: {} checks passed", self.mode, self.total);
    }
}

fn d(name: &str) -> DomainName {
    DomainName::parse(name).expect("lab name")
}

fn tlsa(records: &[String]) -> TlsaLookup {
    let mut parsed: Vec<TlsaRecord> = records.iter().map(|r| r.parse().unwrap()).collect();
    parsed.sort();
    TlsaLookup::Secure(parsed)
}

/// TLSA results with the records sorted (the server's order is not fixed).
fn sorted(lookup: TlsaLookup) -> TlsaLookup {
    match lookup {
        TlsaLookup::Secure(mut records) => {
            records.sort();
            TlsaLookup::Secure(records)
        }
        other => other,
    }
}

fn hosts(lookup: &postern_dns::MxLookup) -> Vec<(u16, String)> {
    lookup
        .hosts
        .iter()
        .map(|h| (h.preference, h.exchange.to_string()))
        .collect()
}

fn summary(a: &AddressLookup) -> (DnssecStatus, String, Vec<IpAddr>) {
    (a.status, a.canonical.to_string(), a.addresses.clone())
}

/// The whole matrix against one resolver.
async fn matrix(mode: &'static str, r: &DaneResolver) {
    let mut c = Checks::new(mode);
    let mx_tlsa = tlsa(&[format!("3 1 1 {H_MX}"), format!("2 0 1 {H_CA}")]);

    // Control first: a lab that does not validate at all must not pass the
    // Bogus cases below (hickory #3932: fetch failures can look Bogus).
    let control = r.mx(&d("dane.test")).await;
    assert_eq!(
        control.status,
        DnssecStatus::Secure,
        "{mode}: control query not Secure; the lab is broken: {control:?}"
    );

    // dane.test: MX, A/AAAA and TLSA all Secure, with their values.
    let mx = r.mx(&d("dane.test")).await;
    c.eq("dane.test MX status", mx.status, DnssecStatus::Secure);
    c.eq(
        "dane.test MX hosts, preference-sorted",
        hosts(&mx),
        vec![(10, "mx.dane.test".into()), (20, "mx2.dane.test".into())],
    );
    c.eq("dane.test DANE applies", mx.dane_applies(), true);
    c.eq("dane.test no denial", mx.denial, None);
    let a = r.addresses(&d("mx.dane.test")).await;
    c.eq(
        "mx.dane.test A/AAAA",
        summary(&a),
        (
            DnssecStatus::Secure,
            "mx.dane.test".into(),
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
        ),
    );
    c.eq(
        "mx.dane.test TLSA",
        sorted(r.tlsa(&d("mx.dane.test"), 25).await),
        mx_tlsa.clone(),
    );

    // An answer too large for UDP: truncated, retried over TCP.
    let many = r.addresses(&d("many.dane.test")).await;
    c.eq(
        "many.dane.test A over TCP",
        (many.status, many.addresses.len()),
        (DnssecStatus::Secure, 120),
    );

    // Secure denials under dane.test (NSEC3): NXDOMAIN and NODATA.
    c.eq(
        "TLSA NXDOMAIN under dane.test",
        r.tlsa(&d("nope.dane.test"), 25).await,
        TlsaLookup::SecureNoRecords,
    );
    c.eq(
        "TLSA NODATA under dane.test",
        r.tlsa(&d("nodata.dane.test"), 25).await,
        TlsaLookup::SecureNoRecords,
    );
    let nx = r.mx(&d("nope.dane.test")).await;
    c.eq(
        "MX NXDOMAIN under dane.test",
        (nx.status, nx.denial),
        (DnssecStatus::Secure, Some(Denial::NxDomain)),
    );

    // Unsigned zones: Insecure, data still returned.
    for (domain, address) in [
        ("plain.test", Ipv4Addr::new(127, 0, 0, 5)),
        ("unsig.dane.test", Ipv4Addr::new(127, 0, 0, 5)),
    ] {
        let host = format!("mx.{domain}");
        let mx = r.mx(&d(domain)).await;
        c.eq(
            &format!("{domain} MX"),
            (mx.status, hosts(&mx)),
            (DnssecStatus::Insecure, vec![(10, host.clone())]),
        );
        c.eq(&format!("{domain} DANE applies"), mx.dane_applies(), false);
        let a = r.addresses(&d(&host)).await;
        c.eq(
            &format!("{host} A"),
            summary(&a),
            (DnssecStatus::Insecure, host.clone(), vec![address.into()]),
        );
        c.eq(
            &format!("{host} TLSA"),
            r.tlsa(&d(&host), 25).await,
            TlsaLookup::Insecure,
        );
        c.eq(
            &format!("{host} TLSA for insecure addresses"),
            r.tlsa_for(&a, 25).await.lookup,
            TlsaLookup::Insecure,
        );
    }

    // Bogus (tampered data) and expired signatures.
    for domain in ["bogus.test", "expired.test"] {
        let host = format!("mx.{domain}");
        let mx = r.mx(&d(domain)).await;
        c.eq(
            &format!("{domain} MX"),
            (mx.status, hosts(&mx)),
            (DnssecStatus::Bogus, vec![]),
        );
        c.eq(
            &format!("{host} A"),
            r.addresses(&d(&host)).await.status,
            DnssecStatus::Bogus,
        );
        c.eq(
            &format!("{host} TLSA"),
            r.tlsa(&d(&host), 25).await,
            TlsaLookup::Failed(LookupFailure::Bogus),
        );
    }

    // RFC 7672 §2.2.2: an MX target that is a CNAME. TLSA at the expanded
    // name first (base domain: the expanded name) ...
    let mx = r.mx(&d("viaalias.dane.test")).await;
    c.eq(
        "viaalias MX",
        (mx.status, hosts(&mx)),
        (DnssecStatus::Secure, vec![(10, "alias.dane.test".into())]),
    );
    let a = r
        .addresses(
            &mx.hosts
                .first()
                .map_or(d("alias.dane.test"), |h| h.exchange.clone()),
        )
        .await;
    c.eq(
        "alias.dane.test A/AAAA, expanded",
        (a.name.to_string(), summary(&a)),
        (
            "alias.dane.test".into(),
            (
                DnssecStatus::Secure,
                "mx.dane.test".into(),
                vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            ),
        ),
    );
    let t = r.tlsa_for(&a, 25).await;
    c.eq(
        "alias.dane.test TLSA at the expanded name",
        (t.base_domain.to_string(), sorted(t.lookup)),
        ("mx.dane.test".into(), mx_tlsa.clone()),
    );
    // ... and the original name when the expanded name has none.
    let a = r.addresses(&d("alias2.dane.test")).await;
    c.eq(
        "alias2.dane.test A, expanded",
        summary(&a),
        (
            DnssecStatus::Secure,
            "notlsa.dane.test".into(),
            vec![Ipv4Addr::new(127, 0, 0, 3).into()],
        ),
    );
    let t = r.tlsa_for(&a, 25).await;
    c.eq(
        "alias2.dane.test TLSA falls back to the original name",
        (t.base_domain.to_string(), t.lookup),
        (
            "alias2.dane.test".into(),
            tlsa(&[format!("3 1 1 {H_ALIAS2}")]),
        ),
    );

    // A secure CNAME into a tampered zone stays Bogus (the chain is only as
    // good as its weakest link), and so does its TLSA lookup.
    let a = r.addresses(&d("badalias.dane.test")).await;
    c.eq("badalias.dane.test A", a.status, DnssecStatus::Bogus);
    c.eq(
        "badalias.dane.test TLSA",
        r.tlsa_for(&a, 25).await.lookup,
        TlsaLookup::Failed(LookupFailure::Bogus),
    );

    // A CNAME on the TLSA name: secure chain → the target's records;
    // a chain into an unsigned zone → Insecure.
    c.eq(
        "TLSA CNAME, secure chain",
        sorted(r.tlsa(&d("mx2.dane.test"), 25).await),
        mx_tlsa,
    );
    c.eq(
        "TLSA CNAME into an unsigned zone",
        r.tlsa(&d("mx3.dane.test"), 25).await,
        TlsaLookup::Insecure,
    );

    c.finish();
}

/// Every lookup against a server that does not answer is Indeterminate.
async fn unreachable(mode: &'static str, r: &DaneResolver) {
    let mut c = Checks::new(mode);
    let started = Instant::now();
    c.eq(
        "MX",
        r.mx(&d("dane.test")).await.status,
        DnssecStatus::Indeterminate,
    );
    c.eq(
        "A/AAAA",
        r.addresses(&d("mx.dane.test")).await.status,
        DnssecStatus::Indeterminate,
    );
    c.eq(
        "TLSA",
        r.tlsa(&d("mx.dane.test"), 25).await,
        TlsaLookup::Failed(LookupFailure::Indeterminate),
    );
    eprintln!("{mode}: three lookups in {:?}", started.elapsed());
    c.finish();
}

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_mode() {
    let Some(lab) = DnsLab::start() else { return };
    let config = ValidatingConfig::new([lab.nsd])
        .with_trust_anchor(TrustAnchor::File(lab.trust_anchor.clone()))
        .with_timeout(TIMEOUT);
    let resolver = DaneResolver::validating(&config).expect("resolver");
    assert_eq!(resolver.trusted_resolver_is_loopback(), None);
    let started = Instant::now();
    matrix("validating", &resolver).await;
    eprintln!("validating: matrix in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_mode() {
    let Some(lab) = DnsLab::start() else { return };
    let resolver = DaneResolver::trust_ad(TrustAdConfig::new(lab.unbound).with_timeout(TIMEOUT));
    assert_eq!(resolver.trusted_resolver_is_loopback(), Some(true));
    let started = Instant::now();
    matrix("trust-ad", &resolver).await;
    eprintln!("trust-ad: matrix in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_are_indeterminate() {
    // No lab needed: a loopback port nobody listens on.
    let dead = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port());
    let short = Duration::from_millis(300);
    let validating = DaneResolver::validating(
        &ValidatingConfig::new([dead])
            .with_timeout(short)
            .with_attempts(1),
    )
    .expect("resolver");
    unreachable("validating, dead server", &validating).await;
    let trust_ad = DaneResolver::trust_ad(TrustAdConfig::new(dead).with_timeout(short));
    unreachable("trust-ad, dead server", &trust_ad).await;
}
