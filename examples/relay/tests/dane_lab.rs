//! DANE (RFC 7672) end to end, hermetic: the relay resolves through the
//! offline DNSSEC lab (postern-test-support's `dns_lab`: nsd serving zones
//! signed on every run, unbound validating them, both on loopback) and
//! delivers to next hops on loopback.
//!
//! The lab gets two zones generated here: `secure.test` (signed, delegated
//! with DS), whose TLSA records are computed from the certificates generated
//! here (3 1 1: SHA-256 of a next hop's SubjectPublicKeyInfo; 2 0 1: SHA-256
//! of the test CA's certificate), and `insecure.test` (delegated without DS).
//! unbound forwards one TLSA name to a UDP socket that never answers. The
//! lab's own `bogus.test` (data changed under its RRSIGs) and `expired.test`
//! (RRSIGs of 2020) are used as they are.
//!
//! Each case has its own names and MX address (127.0.0.N); each test starts
//! its own relay, whose `mx_port` is the port its next hops listen on, while
//! TLSA records are still looked up at `_25._tcp.<host>`. Relays use
//! `[dns] dnssec = "trust-ad"` asking unbound, or `"validate"` from the lab's
//! trust anchor (asking unbound too, or nsd, to see tampered data itself). Each outcome is checked at the next hop
//! (got the message or not, over TLS or not, any MAIL at all), in the spool
//! (deferred with its code) or at the sender's domain (the bounce), and in
//! the relay's delivery log line.
//!
//! One lab serves the whole test binary: the first test starts it, and it
//! stops when the process ends. Without the lab's tools the tests skip with
//! a message, or fail under `CI`.

mod capture;
mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::LazyLock;
use std::time::Duration;

use common::{
    NextHop, Pem, Serve, Submit, ca, enforce, message, self_signed, start_policy_host,
    start_postern_hop, start_postern_hop_at, submit_requiretls, transport, wait_for,
};
use lettre::AsyncTransport;
use postern_relay::config::Config;
use postern_relay::envelope::{Failure, RecipientState};
use postern_relay::net::dns::SystemResolver;
use postern_relay::relay::Relay;
use postern_test_support::dns_lab::{DnsLab, LabOptions};
use rcgen::PublicKeyData as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A destination domain, its MX host, the host's address 127.0.0.`ip`, and
/// the local part of the recipient (unique per test: the log is shared).
#[derive(Clone, Copy, Debug)]
struct Site {
    domain: &'static str,
    host: &'static str,
    ip: u8,
    local: &'static str,
}

impl Site {
    const fn new(domain: &'static str, host: &'static str, ip: u8) -> Self {
        Self {
            domain,
            host,
            ip,
            local: "user",
        }
    }

    const fn to(self, local: &'static str) -> Self {
        Self { local, ..self }
    }

    fn addr(self) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.ip)
    }

    fn rcpt(self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

// secure.test: signed, MX and hosts Secure.
const EE: Site = Site::new("ee.secure.test", "mx.ee.secure.test", 10);
const EE_VALIDATE: Site = Site::new("ee-v.secure.test", "mx.ee-v.secure.test", 11);
const EE_MISMATCH: Site = Site::new("eebad.secure.test", "mx.eebad.secure.test", 12);
const TA: Site = Site::new("ta.secure.test", "mx.ta.secure.test", 13);
const TA_WRONG_NAME: Site = Site::new("taname.secure.test", "mx.taname.secure.test", 14);
const UNUSABLE: Site = Site::new("unusable.secure.test", "mx.unusable.secure.test", 15);
const UNUSABLE_PLAIN: Site = Site::new(
    "unusable-plain.secure.test",
    "mx.unusable-plain.secure.test",
    16,
);
/// Its TLSA name is forwarded by unbound to a server that never answers.
const STALL: Site = Site::new("stall.secure.test", "mx.stall.secure.test", 17);
/// MX `alias.cname.secure.test`, a CNAME to this host.
const CNAME: Site = Site::new("cname.secure.test", "mx.cname.secure.test", 18);
const STS: Site = Site::new("sts.secure.test", "mx.sts.secure.test", 20);
const RT: Site = Site::new("rt.secure.test", "mx.rt.secure.test", 21);
// insecure.test: unsigned, delegated without DS.
/// An insecure MX naming a host in secure.test (whose TLSA does not match).
const MIXED: Site = Site::new("mixed.insecure.test", "mx.mixed.secure.test", 19);
const RT_INSECURE: Site = Site::new("rt.insecure.test", "mx.rt.insecure.test", 22);
/// Publishes a TLSA record that does not match (ignored: insecure).
const INSECURE: Site = Site::new("plain.insecure.test", "mx.plain.insecure.test", 23);
const DANE_ONLY: Site = Site::new("only.insecure.test", "mx.only.insecure.test", 24);
// The lab's own zones (tests/lab/zones in postern-dns).
const BOGUS: Site = Site::new("bogus.test", "mx.bogus.test", 1);
/// The address bogus.test's A record was changed to.
const BOGUS_TAMPERED: u8 = 66;
const EXPIRED: Site = Site::new("expired.test", "mx.expired.test", 1);

/// The running lab and the certificates its TLSA records were made from.
struct Lab {
    dns: DnsLab,
    certs: Certs,
    /// Receives the forwarded TLSA queries of [`STALL`] and never answers.
    _black_hole: UdpSocket,
}

/// The next hops' certificates.
struct Certs {
    ee: Pem,
    ee_validate: Pem,
    ee_mismatch: Pem,
    ta: Pem,
    ta_wrong_name: Pem,
    unusable: Pem,
    cname: Pem,
    mixed: Pem,
    sts: Pem,
    rt: Pem,
    rt_insecure: Pem,
    dane_only: Pem,
}

/// A leaf for `names` from an intermediate of the test CA, served with the
/// intermediate and the CA (a DANE-TA(2) server sends its trust anchor).
fn chained(names: &[&str]) -> Pem {
    let intermediate = ca().intermediate("Postern DANE Intermediate");
    let mut pem = intermediate.leaf(names, false, -1, 90);
    pem.chain = vec![intermediate.cert_pem.clone(), ca().cert_pem.clone()];
    pem
}

impl Certs {
    fn new() -> Self {
        Self {
            ee: self_signed(&[EE.host], false),
            ee_validate: self_signed(&[EE_VALIDATE.host], false),
            ee_mismatch: self_signed(&[EE_MISMATCH.host], false),
            ta: chained(&[TA.host]),
            ta_wrong_name: chained(&["elsewhere.secure.test"]),
            unusable: self_signed(&[UNUSABLE.host], false),
            cname: chained(&[CNAME.host]),
            mixed: self_signed(&[MIXED.host], false),
            sts: self_signed(&[STS.host], false),
            rt: self_signed(&[RT.host], false),
            rt_insecure: self_signed(&[RT_INSECURE.host], false),
            dane_only: self_signed(&[DANE_ONLY.host], false),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// TLSA `3 1 1` data: SHA-256 of the key's SubjectPublicKeyInfo (from rcgen,
/// not from the code under test).
fn spki_sha256(pem: &Pem) -> String {
    let key = rcgen::KeyPair::from_pem(&pem.key).expect("fixture key");
    sha256(&key.subject_public_key_info())
}

/// TLSA `2 0 1` data for the test CA: SHA-256 of its certificate.
fn ca_sha256() -> String {
    sha256(
        CertificateDer::from_pem_slice(ca().cert_pem.as_bytes())
            .expect("CA pem")
            .as_ref(),
    )
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A zone's head; names below are relative to `origin`.
fn zone_head(origin: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ SOA ns.test. hostmaster.{origin}. 1 3600 600 86400 300\n\
         @ NS ns.test.\n"
    )
}

/// `site`'s MX (when it is in `origin`), its host's address and TLSA records
/// (when the host is in `origin`).
fn records(zone: &mut String, origin: &str, site: Site, tlsa: &[String]) {
    let relative = |name: &str| name.strip_suffix(&format!(".{origin}")).map(str::to_owned);
    if let Some(domain) = relative(site.domain) {
        let _ = writeln!(zone, "{domain} MX 10 {}.", site.host);
    }
    if let Some(host) = relative(site.host) {
        let _ = writeln!(zone, "{host} A {}", site.addr());
        for t in tlsa {
            let _ = writeln!(zone, "_25._tcp.{host} TLSA {t}");
        }
    }
}

fn secure_zone(c: &Certs) -> String {
    let origin = "secure.test";
    let ta = format!("2 0 1 {}", ca_sha256());
    let ee = |pem: &Pem| format!("3 1 1 {}", spki_sha256(pem));
    let mut z = zone_head(origin);
    records(&mut z, origin, EE, &[ee(&c.ee)]);
    records(&mut z, origin, EE_VALIDATE, &[ee(&c.ee_validate)]);
    // The next hop's key is not this one.
    let other = self_signed(&[EE_MISMATCH.host], false);
    records(&mut z, origin, EE_MISMATCH, &[ee(&other)]);
    records(&mut z, origin, TA, std::slice::from_ref(&ta));
    records(&mut z, origin, TA_WRONG_NAME, std::slice::from_ref(&ta));
    // PKIX-TA(0) and PKIX-EE(1): unusable in SMTP (RFC 7672 §3.1.3), even
    // when they match.
    let unusable = |pem: &Pem| {
        [
            format!("0 0 1 {}", ca_sha256()),
            format!("1 1 1 {}", spki_sha256(pem)),
        ]
    };
    records(&mut z, origin, UNUSABLE, &unusable(&c.unusable));
    records(&mut z, origin, UNUSABLE_PLAIN, &unusable(&c.unusable));
    records(&mut z, origin, STALL, &[format!("3 1 1 {ZEROS}")]);
    // RFC 7672 §2.2.2: the MX names a CNAME; the TLSA records at its target
    // apply, not the (non-matching) ones at the alias.
    let _ = writeln!(z, "cname MX 10 alias.cname.{origin}.");
    let _ = writeln!(z, "alias.cname CNAME {}.", CNAME.host);
    let _ = writeln!(z, "_25._tcp.alias.cname TLSA 3 1 1 {ZEROS}");
    records(&mut z, origin, CNAME, std::slice::from_ref(&ta));
    records(&mut z, origin, MIXED, &[format!("3 1 1 {ZEROS}")]);
    records(&mut z, origin, STS, &[ee(&c.sts)]);
    let _ = writeln!(z, "_mta-sts.sts TXT \"v=STSv1; id=1;\"");
    let _ = writeln!(z, "mta-sts.sts A 127.0.0.1");
    records(&mut z, origin, RT, &[ee(&c.rt)]);
    z
}

fn insecure_zone(c: &Certs) -> String {
    let origin = "insecure.test";
    let mut z = zone_head(origin);
    records(&mut z, origin, MIXED, &[]);
    records(&mut z, origin, RT_INSECURE, &[]);
    records(&mut z, origin, INSECURE, &[format!("3 1 1 {ZEROS}")]);
    records(
        &mut z,
        origin,
        DANE_ONLY,
        &[format!("3 1 1 {}", spki_sha256(&c.dane_only))],
    );
    z
}

impl Lab {
    fn start() -> Option<Self> {
        let certs = Certs::new();
        let zones = tempfile::tempdir().expect("temporary directory");
        std::fs::write(zones.path().join("secure.test.zone"), secure_zone(&certs)).unwrap();
        std::fs::write(
            zones.path().join("insecure.test.unsigned.zone"),
            insecure_zone(&certs),
        )
        .unwrap();
        let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let unbound_extra = zones.path().join("unbound-extra.conf");
        std::fs::write(
            &unbound_extra,
            format!(
                "forward-zone:\n    name: \"_25._tcp.{}.\"\n    forward-addr: 127.0.0.1@{}\n",
                STALL.host,
                black_hole.local_addr().unwrap().port()
            ),
        )
        .unwrap();
        let dns = DnsLab::start_with(&LabOptions {
            extra_zones: Some(zones.path().to_owned()),
            unbound_extra: Some(unbound_extra),
            stop_with_process: true,
        })?;
        assert_eq!(dns.extra_zones, ["insecure.test", "secure.test"]);
        // setup.sh copied the zones and the unbound lines into its run
        // directory (removed when the process ends); these can go now.
        drop(zones);
        Some(Self {
            dns,
            certs,
            _black_hole: black_hole,
        })
    }
}

/// The lab, started once per test binary; `None`: skip (tools missing).
fn lab() -> Option<&'static Lab> {
    static LAB: LazyLock<Option<Lab>> = LazyLock::new(Lab::start);
    LAB.as_ref()
}

/// How the relay gets DNSSEC answers.
#[derive(Clone, Copy, Debug)]
enum Dnssec {
    /// unbound validates; the relay trusts its AD bit.
    TrustAd,
    /// The relay validates from the lab's trust anchor, asking unbound
    /// (which answers SERVFAIL where validation fails).
    Validate,
    /// The relay validates from the lab's trust anchor, asking nsd (so
    /// that it sees the tampered data and finds it Bogus itself).
    ValidateAtNsd,
}

/// What a next hop offers.
enum Hop<'a> {
    Plain,
    Tls(&'a Pem),
}

/// Starts next hops at `hops` addresses, all on one port; returns it.
async fn start_hops(hops: &[(Ipv4Addr, Hop<'_>)]) -> (u16, Vec<NextHop>) {
    let port = (0..50)
        .find_map(|_| {
            let first = std::net::TcpListener::bind((hops[0].0, 0)).ok()?;
            let port = first.local_addr().ok()?.port();
            let rest: Option<Vec<_>> = hops[1..]
                .iter()
                .map(|(ip, _)| std::net::TcpListener::bind((*ip, port)).ok())
                .collect();
            rest.map(|_| port)
        })
        .expect("a port free on every next-hop address");
    let mut started = Vec::new();
    for (ip, hop) in hops {
        let cert = match hop {
            Hop::Plain => None,
            Hop::Tls(pem) => Some(*pem),
        };
        started.push(start_postern_hop_at(cert, &format!("{ip}:{port}")).await);
    }
    (port, started)
}

/// A relay on the lab's DNS, connecting to MX hosts on `mx_port`, with the
/// sender's domain (client.test, where bounces go) routed to its own next
/// hop. `toml` is appended (more tables).
struct Run {
    dir: tempfile::TempDir,
    relay: Relay,
    sink: NextHop,
}

async fn start_relay(lab: &Lab, dnssec: Dnssec, mx_port: u16, toml: &str) -> Run {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_postern_hop(None).await;
    let (dns, server) = match dnssec {
        Dnssec::TrustAd => ("dnssec = \"trust-ad\"".to_owned(), lab.dns.unbound),
        Dnssec::Validate | Dnssec::ValidateAtNsd => (
            format!(
                "dnssec = \"validate\"\ntrust_anchor = \"{}\"",
                lab.dns.trust_anchor.display()
            ),
            if matches!(dnssec, Dnssec::Validate) {
                lab.dns.unbound
            } else {
                lab.dns.nsd
            },
        ),
    };
    let text = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\nclient_reply = \"10s\"\ntls_handshake = \"5s\"\n\
         [dns]\n{dns}\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n\
         [routes]\n\"client.test\" = \"127.0.0.1:{}\"\n{toml}\n",
        dir.path().join("state").display(),
        server,
        sink.addr.port(),
    );
    let mut text = text;
    if !toml.contains("[certificates]") {
        text.push_str("[certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n");
    }
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let resolver = SystemResolver::from_config(&config.dns).expect("resolver");
    let relay = Relay::start_with_resolver(config, resolver, mx_port)
        .await
        .unwrap();
    Run { dir, relay, sink }
}

impl Run {
    fn addr(&self) -> SocketAddr {
        self.relay.local_addrs()[0]
    }

    async fn send(&self, site: Site) {
        transport(self.addr(), Submit::Plain)
            .send(message(&site.rcpt(), site.domain))
            .await
            .unwrap_or_else(|e| panic!("{}: submission: {e}", site.domain));
    }

    async fn send_requiretls(&self, site: Site) {
        let r = submit_requiretls(self.addr(), "alice@client.test", &site.rcpt(), "secret").await;
        assert!(r.starts_with("250 "), "{}: {r}", site.domain);
    }

    /// Bounces that reached the sender's domain about `rcpt`.
    fn bounces(&self, rcpt: &str) -> Vec<String> {
        self.sink
            .delivered_to("alice@client.test")
            .iter()
            .map(|b| String::from_utf8_lossy(&b.content).into_owned())
            .filter(|t| t.contains(&format!("Final-Recipient: rfc822; {rcpt}")))
            .collect()
    }

    /// Waits (60 s at most) until `site`'s recipient was delivered at
    /// `hop`, deferred or bounced, and says which.
    async fn outcome(&self, site: Site, hop: &NextHop) -> Outcome {
        let rcpt = site.rcpt();
        let deferred = |scan: &postern_relay::queue::spool::Scan| {
            scan.messages
                .iter()
                .flat_map(|m| &m.envelope.recipients)
                .find(|r| r.address.to_string() == rcpt && r.state == RecipientState::Deferred)
                .and_then(|r| r.last_failure.clone())
        };
        let scan = wait_for(self.dir.path(), Duration::from_secs(60), &rcpt, |s| {
            !hop.delivered_to(&rcpt).is_empty()
                || deferred(s).is_some()
                || !self.bounces(&rcpt).is_empty()
        })
        .await;
        let log = capture::lines_with(&format!("to=<{rcpt}>,"));
        let outcome = if let Some(d) = hop.delivered_to(&rcpt).first() {
            Outcome::Delivered { tls: d.tls, log }
        } else if let Some(f) = deferred(&scan) {
            Outcome::Deferred { failure: f, log }
        } else {
            let dsn = self.bounces(&rcpt).into_iter().next();
            Outcome::Bounced {
                dsn: dsn.unwrap_or_else(|| panic!("{rcpt}: no outcome after all")),
                log,
            }
        };
        eprintln!("{rcpt}: {outcome:?}");
        outcome
    }

    /// `site` was delivered once at `hop`, over TLS or not, and logged sent.
    async fn expect_delivered(&self, site: Site, hop: &NextHop, tls: bool) {
        match self.outcome(site, hop).await {
            Outcome::Delivered { tls: over_tls, log } => {
                assert_eq!(over_tls, tls, "{}: over TLS", site.domain);
                // The log line is written after the reply to the final dot.
                let log = wait_log(&site.rcpt(), "status=sent").await.unwrap_or(log);
                assert!(
                    log.iter().any(|l| l.contains("status=sent")),
                    "{}: {log:#?}",
                    site.domain
                );
            }
            other => panic!("{}: not delivered: {other:?}", site.domain),
        }
        assert_eq!(hop.delivered_to(&site.rcpt()).len(), 1, "{}", site.domain);
        if tls {
            assert_eq!(
                hop.log.lock().unwrap().plaintext_mail,
                0,
                "{}: MAIL in plaintext",
                site.domain
            );
        }
    }

    /// `site` was deferred with a code starting with `code` (and RFC 8460
    /// result type `result_type`, when given): no MAIL reached any of
    /// `hops`, no bounce was sent, and the log says deferred with that code.
    async fn expect_deferred(
        &self,
        site: Site,
        hops: &[&NextHop],
        code: &str,
        result_type: Option<&str>,
    ) -> Failure {
        let Outcome::Deferred { failure, log } = self.outcome(site, hops[0]).await else {
            panic!("{}: not deferred", site.domain);
        };
        let got = failure.code.to_string();
        assert!(
            got.starts_with(code),
            "{}: code {got}, expected {code}…: {failure:?}\n{log:#?}",
            site.domain
        );
        if let Some(t) = result_type {
            assert_eq!(
                failure.result_type.map(|r| r.as_str()),
                Some(t),
                "{}: {failure:?}",
                site.domain
            );
        }
        for hop in hops {
            let l = hop.log.lock().unwrap();
            assert_eq!(l.mail, 0, "{}: MAIL reached the next hop", site.domain);
            assert!(l.delivered.is_empty(), "{}", site.domain);
        }
        assert!(self.bounces(&site.rcpt()).is_empty(), "{}", site.domain);
        assert!(
            log.iter()
                .any(|l| l.contains("status=deferred") && l.contains(&format!("dsn={got}"))),
            "{}: log: {log:#?}",
            site.domain
        );
        failure
    }
}

/// The log lines about `rcpt` once one contains `needle` (2 s at most).
async fn wait_log(rcpt: &str, needle: &str) -> Option<Vec<String>> {
    for _ in 0..40 {
        let lines = capture::lines_with(&format!("to=<{rcpt}>,"));
        if lines.iter().any(|l| l.contains(needle)) {
            return Some(lines);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What became of one recipient.
#[derive(Debug)]
enum Outcome {
    Delivered { tls: bool, log: Vec<String> },
    Deferred { failure: Failure, log: Vec<String> },
    Bounced { dsn: String, log: Vec<String> },
}

/// DANE-EE(3) matching the server's key: delivered over TLS, although the
/// certificate is self-signed (no name or expiry checks).
async fn ee_match(dnssec: Dnssec, site: Site, cert: fn(&Certs) -> &Pem) {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(site.addr(), Hop::Tls(cert(&lab.certs)))]).await;
    let run = start_relay(lab, dnssec, port, "").await;
    run.send(site).await;
    run.expect_delivered(site, &hops[0], true).await;
    run.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_match_is_delivered_trust_ad() {
    ee_match(Dnssec::TrustAd, EE, |c| &c.ee).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_match_is_delivered_validate() {
    ee_match(Dnssec::Validate, EE_VALIDATE, |c| &c.ee_validate).await;
}

/// DANE-EE(3) not matching: deferred 4.7.x; the TLS session is abandoned
/// before MAIL, and there is no retry in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_mismatch_is_deferred() {
    let Some(lab) = lab() else { return };
    let site = EE_MISMATCH;
    let (port, hops) = start_hops(&[(site.addr(), Hop::Tls(&lab.certs.ee_mismatch))]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(site).await;
    run.expect_deferred(site, &[&hops[0]], "4.7.", None).await;
    assert!(hops[0].log.lock().unwrap().connections >= 1, "never tried");
    run.relay.shutdown().await;
}

/// DANE-TA(2): a chain to the trust anchor with the MX host's name is
/// delivered; the same chain for another name is deferred (the reference
/// identifiers are the TLSA base domain and the destination domain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_needs_the_chain_and_the_name() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[
        (TA.addr(), Hop::Tls(&lab.certs.ta)),
        (TA_WRONG_NAME.addr(), Hop::Tls(&lab.certs.ta_wrong_name)),
    ])
    .await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(TA).await;
    run.send(TA_WRONG_NAME).await;
    run.expect_delivered(TA, &hops[0], true).await;
    run.expect_deferred(TA_WRONG_NAME, &[&hops[1]], "4.7.", None)
        .await;
    run.relay.shutdown().await;
}

/// Only unusable TLSA records (PKIX-TA/EE): TLS is required but not
/// authenticated (RFC 7672 §3.1.3): a self-signed certificate is delivered
/// to, a next hop without STARTTLS is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unusable_tlsa_requires_unauthenticated_tls() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[
        (UNUSABLE.addr(), Hop::Tls(&lab.certs.unusable)),
        (UNUSABLE_PLAIN.addr(), Hop::Plain),
    ])
    .await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(UNUSABLE).await;
    run.send(UNUSABLE_PLAIN).await;
    run.expect_delivered(UNUSABLE, &hops[0], true).await;
    run.expect_deferred(UNUSABLE_PLAIN, &[&hops[1]], "4.7.", None)
        .await;
    run.relay.shutdown().await;
}

/// An insecure delegation: no DANE (its non-matching TLSA record is
/// ignored), opportunistic TLS, so a next hop without STARTTLS gets the
/// message in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_delegation_is_opportunistic() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(INSECURE.addr(), Hop::Plain)]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(INSECURE).await;
    run.expect_delivered(INSECURE, &hops[0], false).await;
    run.relay.shutdown().await;
}

/// Tampered data under valid signatures (bogus.test): deferred, never
/// delivered, not even to the tampered address.
async fn bogus(dnssec: Dnssec, site: Site) {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[
        (BOGUS.addr(), Hop::Plain),
        (Ipv4Addr::new(127, 0, 0, BOGUS_TAMPERED), Hop::Plain),
    ])
    .await;
    let run = start_relay(lab, dnssec, port, "").await;
    run.send(site).await;
    let failure = run
        .expect_deferred(site, &[&hops[0], &hops[1]], "4.", None)
        .await;
    if matches!(dnssec, Dnssec::ValidateAtNsd) {
        assert!(failure.text.contains("bogus"), "{failure:?}");
    }
    for hop in &hops {
        assert_eq!(hop.log.lock().unwrap().connections, 0, "{dnssec:?}");
    }
    run.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_signature_is_deferred_trust_ad() {
    bogus(Dnssec::TrustAd, BOGUS.to("trust-ad")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_signature_is_deferred_validate() {
    bogus(Dnssec::Validate, BOGUS.to("validate")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_signature_is_deferred_validate_at_nsd() {
    bogus(Dnssec::ValidateAtNsd, BOGUS.to("validate-nsd")).await;
}

/// RRSIGs that expired (expired.test): deferred, the MX never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_signatures_are_deferred() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(EXPIRED.addr(), Hop::Plain)]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(EXPIRED).await;
    run.expect_deferred(EXPIRED, &[&hops[0]], "4.", None).await;
    assert_eq!(hops[0].log.lock().unwrap().connections, 0);
    run.relay.shutdown().await;
}

/// A secure MX whose TLSA lookup times out: deferred, not "no DANE" (a
/// next hop without STARTTLS does not get the message in plaintext).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsa_lookup_failure_is_deferred_not_downgraded() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(STALL.addr(), Hop::Plain)]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(STALL).await;
    run.expect_deferred(STALL, &[&hops[0]], "4.", None).await;
    run.relay.shutdown().await;
}

/// RFC 7672 §2.2.2: the MX host is a CNAME; the TLSA records of its target
/// (DANE-TA) apply, not those at the alias, and the certificate's name is
/// checked against the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_mx_uses_the_target_tlsa() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(CNAME.addr(), Hop::Tls(&lab.certs.cname))]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(CNAME).await;
    run.expect_delivered(CNAME, &hops[0], true).await;
    run.relay.shutdown().await;
}

/// An insecure MX RRset naming a secure host: DANE does not apply (the MX
/// could have been forged), so the host's non-matching TLSA record does
/// not stop opportunistic delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mx_to_secure_host_is_not_dane() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(MIXED.addr(), Hop::Tls(&lab.certs.mixed))]).await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send(MIXED).await;
    run.expect_delivered(MIXED, &hops[0], true).await;
    run.relay.shutdown().await;
}

/// A domain with usable TLSA records and an MTA-STS `enforce` policy, under
/// the `mta-sts` mode: DANE governs (RFC 8461 §2), so a self-signed
/// certificate matching the TLSA record is delivered to, although the
/// policy would refuse it; and so is a REQUIRETLS message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_governs_over_mta_sts() {
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca().cert_pem).unwrap();
    let policy_name = format!("mta-sts.{}", STS.domain);
    let policy: &'static str = Box::leak(enforce(STS.host).into_boxed_str());
    let (https_port, requests) = start_policy_host(
        &ca().leaf(&[&policy_name], false, -1, 90),
        [(policy_name.clone(), Serve::Policy(policy))].into(),
    )
    .await;
    let (port, hops) = start_hops(&[(STS.addr(), Hop::Tls(&lab.certs.sts))]).await;
    let run = start_relay(
        lab,
        Dnssec::TrustAd,
        port,
        &format!(
            "[mta_sts]\nfetch_timeout = \"10s\"\nhttps_port = {https_port}\n\
             [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n\
             [tls.outbound.domains.\"{}\"]\ntls = \"mta-sts\"\n",
            ca_file.display(),
            STS.domain
        ),
    )
    .await;
    run.send(STS).await;
    run.expect_delivered(STS, &hops[0], true).await;
    let rcpt = "requiretls@sts.secure.test";
    let r = submit_requiretls(run.addr(), "alice@client.test", rcpt, "secret").await;
    assert!(r.starts_with("250 "), "{r}");
    wait_for(run.dir.path(), Duration::from_secs(60), rcpt, |_| {
        !hops[0].delivered_to(rcpt).is_empty() || !run.bounces(rcpt).is_empty()
    })
    .await;
    let delivered = hops[0].delivered_to(rcpt);
    assert_eq!(delivered.len(), 1, "{:#?}", run.bounces(rcpt));
    assert!(delivered[0].tls);
    eprintln!(
        "{}: policy fetched {:?} time(s)",
        STS.domain,
        requests.lock().unwrap().get(&policy_name)
    );
    run.relay.shutdown().await;
}

/// RFC 8689 §4.2.1 with DANE: a REQUIRETLS message to a destination whose
/// MX is DNSSEC-secure and whose TLS is DANE-authenticated is delivered
/// (the next hop advertises REQUIRETLS); to an insecure destination (no
/// MTA-STS either) it comes back 5.7.x, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_with_dane() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[
        (RT.addr(), Hop::Tls(&lab.certs.rt)),
        (RT_INSECURE.addr(), Hop::Tls(&lab.certs.rt_insecure)),
    ])
    .await;
    let run = start_relay(lab, Dnssec::TrustAd, port, "").await;
    run.send_requiretls(RT).await;
    run.send_requiretls(RT_INSECURE).await;
    run.expect_delivered(RT, &hops[0], true).await;
    match run.outcome(RT_INSECURE, &hops[1]).await {
        Outcome::Bounced { dsn, log } => {
            assert!(dsn.contains("Status: 5.7."), "{dsn}");
            assert!(!dsn.contains("secret"), "{dsn}");
            assert!(log.iter().any(|l| l.contains("status=bounced")), "{log:#?}");
        }
        other => panic!("{}: not bounced: {other:?}", RT_INSECURE.domain),
    }
    let mail = hops[1].log.lock().unwrap().mail;
    assert_eq!(mail, 0, "MAIL sent to the insecure destination");
    run.relay.shutdown().await;
}

/// `dane-only` on an insecure domain: deferred (`dane-required`), never
/// sent, though the next hop offers TLS with the certificate its (insecure)
/// TLSA record names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_only_on_an_insecure_domain_is_deferred() {
    let Some(lab) = lab() else { return };
    let (port, hops) = start_hops(&[(DANE_ONLY.addr(), Hop::Tls(&lab.certs.dane_only))]).await;
    let run = start_relay(
        lab,
        Dnssec::TrustAd,
        port,
        &format!(
            "[tls.outbound.domains.\"{}\"]\ntls = \"dane-only\"\n",
            DANE_ONLY.domain
        ),
    )
    .await;
    run.send(DANE_ONLY).await;
    run.expect_deferred(DANE_ONLY, &[&hops[0]], "4.7.", Some("dane-required"))
        .await;
    run.relay.shutdown().await;
}
