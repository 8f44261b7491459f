//! SMTP TLS Reporting (RFC 8460) end to end, on loopback: deliveries under
//! MTA-STS are counted; once the day is over (the clock is passed in), the
//! report of each Policy Domain goes where its `_smtp._tls` TXT record says:
//! by mail (queued, delivered to a next hop) or by HTTPS POST (to a local
//! server with a certificate from the test CA).
//!
//! - `good.test`: MTA-STS `enforce`, MX certificate from the test CA:
//!   delivered; reports by `mailto:tlsrpt@reports.test`.
//! - `badcert.test`: MTA-STS `enforce`, self-signed MX certificate: deferred
//!   (`certificate-not-trusted`); reports by `https://reports.test/…`.
//! - `reports.test`: MTA-STS `enforce` too, with a self-signed MX
//!   certificate: ordinary mail to it would be deferred, but a report mail
//!   is delivered "despite any TLS-related failures" (§5.3) and is not
//!   counted in the next report.
//! - `plain.test`: outbound mode `mta-sts` but no MTA-STS record: delivered,
//!   nothing to report under, though it publishes a TLS-RPT record.
//!
//! The report mail is DKIM-signed (§5.3) and its signature is checked by an
//! independent implementation, dkimpy (installed with pip for the test when
//! missing; without it the check is skipped, except under `CI=true`).

mod common;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::{
    Submit, ca, enforce, message, rsa_key_pem, rustls_server, self_signed, start_postern_hop_at,
    transport, wait_for,
};
use lettre::AsyncTransport;
use postern_policy::ResultType;
use postern_policy::tlsrpt::Report;
use postern_relay::config::Config;
use postern_relay::net::dns::FixedResolver;
use postern_relay::net::dns::SystemResolver;
use postern_relay::relay::Relay;
use postern_relay::reporting::dkim::DkimSigner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A request the HTTPS server received: head (lowercased) and body.
type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTPS server on 127.0.0.1: MTA-STS policies by Host header (GET), and
/// a report sink (POST, recorded, answered 200).
async fn start_https(policies: HashMap<String, String>) -> (u16, Posts) {
    let names: Vec<String> = policies
        .keys()
        .cloned()
        .chain(["reports.test".to_owned()])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let acceptor = TlsAcceptor::from(rustls_server(&ca().leaf(&names, false, -1, 90)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts: Posts = Arc::default();
    let seen = Arc::clone(&posts);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, policies, seen) =
                (acceptor.clone(), policies.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                };
                let response = if head.starts_with("post ") {
                    let len: usize = header("content-length:").unwrap().parse().unwrap();
                    while data.len() < end + len {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push((head.clone(), data[end..end + len].to_vec()));
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()
                } else {
                    let host = header("host:").unwrap_or_default();
                    match policies.get(&host) {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                    }
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, posts)
}

fn gunzip_report(gz: &[u8]) -> Report {
    let mut json = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The headers (unfolded lines) and the decoded `application/tlsrpt+gzip`
/// attachment of a report mail.
fn parse_report_mail(content: &[u8]) -> (Vec<String>, Report) {
    let text = String::from_utf8(content.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let headers = head.split("\r\n").map(str::to_owned).collect();
    let part = body
        .split_once("Content-Type: application/tlsrpt+gzip\r\n")
        .unwrap()
        .1;
    let b64: String = part
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .split("\r\n")
        .take_while(|l| !l.starts_with("--"))
        .collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    (headers, gunzip_report(&gz))
}

/// dkimpy's verdict on `mail`, with `record` as the TXT record of every
/// `_domainkey` name it looks up; `None` when neither an installed dkimpy
/// nor one pip can install into `dir` is at hand.
fn dkimpy_verify(dir: &std::path::Path, mail: &[u8], record: &str) -> Option<bool> {
    use std::process::Command;
    const SCRIPT: &str = "import sys, dkim\n\
        msg = open(sys.argv[1], 'rb').read()\n\
        rec = open(sys.argv[2], 'rb').read()\n\
        ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: rec)\n\
        print('dkimpy:', ok)\n\
        sys.exit(0 if ok else 3)\n";
    let lib = dir.join("pylib");
    let importable = |lib: &std::path::Path| {
        Command::new("python3")
            .args(["-c", "import dkim"])
            .env("PYTHONPATH", lib)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !importable(&lib) {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&lib)
            .arg("dkimpy")
            .output();
        if !importable(&lib) {
            return None;
        }
    }
    let n = std::fs::read_dir(dir).map_or(0, Iterator::count);
    let (m, r) = (
        dir.join(format!("mail{n}.eml")),
        dir.join(format!("record{n}")),
    );
    std::fs::write(&m, mail).unwrap();
    std::fs::write(&r, record).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&m)
        .arg(&r)
        .env("PYTHONPATH", &lib)
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "dkimpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(code == Some(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_outcomes_end_in_reports_by_mail_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    std::fs::write(dir.path().join("dkim.pem"), rsa_key_pem()).unwrap();
    let domains = ["good.test", "badcert.test", "reports.test", "plain.test"];
    let policies: HashMap<String, String> = domains
        .iter()
        .map(|d| (format!("mta-sts.{d}"), enforce(&format!("mx.{d}"))))
        .collect();
    let (https_port, posts) = start_https(policies).await;

    let probe = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let mx_port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut dns = FixedResolver::new()
        .with_address("reports.test", IpAddr::from([127, 0, 0, 1]))
        .with_txt(
            "_smtp._tls.good.test",
            Ok(vec![
                "v=spf1 -all".to_owned(),
                "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test".to_owned(),
            ]),
        )
        .with_txt(
            "_smtp._tls.plain.test",
            Ok(vec![
                "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test".to_owned(),
            ]),
        )
        .with_txt(
            "_smtp._tls.badcert.test",
            Ok(vec![format!(
                "v=TLSRPTv1;rua=https://reports.test:{https_port}/v1/tlsrpt"
            )]),
        );
    let mut hops = HashMap::new();
    for (n, d) in domains.iter().enumerate() {
        let mx = format!("mx.{d}");
        let ip = IpAddr::from([127, 0, 0, u8::try_from(n + 2).unwrap()]);
        let cert = if matches!(*d, "good.test" | "plain.test") {
            ca().leaf(&[&mx], false, -1, 90)
        } else {
            self_signed(&[&mx], false)
        };
        hops.insert(
            *d,
            start_postern_hop_at(Some(&cert), &format!("{ip}:{mx_port}")).await,
        );
        dns = dns
            .with_mx(d, 10, &mx)
            .with_address(&mx, ip)
            .with_address(&format!("mta-sts.{d}"), IpAddr::from([127, 0, 0, 1]));
        if *d != "plain.test" {
            dns = dns.with_txt(
                &format!("_mta-sts.{d}"),
                Ok(vec!["v=STSv1; id=1;".to_owned()]),
            );
        }
    }

    let mut toml = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\nclient_reply = \"10s\"\ntls_handshake = \"5s\"\n\
         [mta_sts]\nfetch_timeout = \"10s\"\nhttps_port = {https_port}\n\
         [tls_reporting]\nenabled = true\nmax_send_delay = \"0s\"\norganization = \"Relay Org\"\n\
         dkim_domain = \"relay.test\"\ndkim_selector = \"tlsrpt\"\ndkim_key = \"{}\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n\
         [tls.outbound]\ntls = \"opportunistic\"\n",
        state.display(),
        dir.path().join("dkim.pem").display(),
        dir.path().join("ca.pem").display()
    );
    for d in domains {
        toml.push_str(&format!(
            "[tls.outbound.domains.\"{d}\"]\ntls = \"mta-sts\"\n"
        ));
    }
    let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    // What the operator publishes at tlsrpt._domainkey.relay.test.
    let record = DkimSigner::from_config(&config.tls_reporting)
        .unwrap()
        .unwrap()
        .dns_record();
    let relay =
        Relay::start_with_resolver(config.clone(), SystemResolver::fixed(dns.clone()), mx_port)
            .await
            .unwrap();
    let addr = relay.local_addrs()[0];
    for d in ["good.test", "badcert.test", "plain.test"] {
        transport(addr, Submit::Plain)
            .send(message(&format!("user@{d}"), d))
            .await
            .unwrap();
    }
    // good.test delivered; badcert.test deferred after one attempt.
    wait_for(dir.path(), Duration::from_secs(60), "first attempts", |s| {
        s.messages.len() == 1 && s.messages[0].envelope.attempts >= 1
    })
    .await;
    assert_eq!(hops["good.test"].delivered_to("user@good.test").len(), 1);
    assert_eq!(hops["plain.test"].delivered_to("user@plain.test").len(), 1);

    // The counts are saved at shutdown and read back at start.
    relay.shutdown().await;
    let saved = std::fs::read_to_string(state.join("tlsrpt/aggregates.json")).unwrap();
    for d in ["good.test", "badcert.test"] {
        assert!(saved.contains(&format!("\"{d}\"")), "{d}: {saved}");
    }
    assert!(!saved.contains("plain.test"), "{saved}");
    let relay = Relay::start_with_resolver(config, SystemResolver::fixed(dns), mx_port)
        .await
        .unwrap();

    // Nothing is due before the day ends.
    let now = SystemTime::now();
    assert_eq!(relay.send_tls_reports(now).await.reports, 0);
    // The day is over (two days later: whatever the time of day now).
    let later = now + Duration::from_secs(2 * 86_400);
    let summary = relay.send_tls_reports(later).await;
    assert_eq!(summary.reports, 2, "{summary:?}");
    assert_eq!(summary.mails_queued, 1, "{summary:?}");
    assert_eq!(summary.posts_sent, 1, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    // Taken once only.
    assert_eq!(relay.send_tls_reports(later).await.reports, 0);

    // The report mail reaches reports.test despite its MTA-STS failure.
    let start = Instant::now();
    let mail = loop {
        if let Some(d) = hops["reports.test"]
            .delivered_to("tlsrpt@reports.test")
            .pop()
        {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "report mail not delivered: {:#?}",
            common::scan(dir.path())
                .messages
                .iter()
                .map(|m| &m.envelope)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (headers, report) = parse_report_mail(&mail.content);
    let has = |h: &str| headers.iter().any(|l| l == h);
    assert!(has("TLS-Report-Domain: good.test"), "{headers:?}");
    assert!(has("TLS-Report-Submitter: relay.test"), "{headers:?}");
    assert!(has("From: <postmaster@relay.test>"), "{headers:?}");
    assert!(
        has(&format!(
            "Subject: Report Domain: good.test Submitter: relay.test Report-ID: <{}>",
            report.report_id
        )),
        "{headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|l| l.starts_with("Content-Type: multipart/report; report-type=\"tlsrpt\";")),
        "{headers:?}"
    );
    // §5.3: DKIM-signed by the reporting domain; dkimpy agrees, and
    // rejects a tampered copy.
    assert!(
        headers[..2].iter().any(|l| l.starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=relay.test; s=tlsrpt;"
        )),
        "{headers:?}"
    );
    let checks = dir.path().join("dkimpy");
    std::fs::create_dir_all(&checks).unwrap();
    match dkimpy_verify(&checks, &mail.content, &record) {
        Some(ok) => {
            assert!(ok, "dkimpy rejects the signature");
            let tampered = String::from_utf8(mail.content.clone()).unwrap().replacen(
                "TLS-Report-Domain: good.test",
                "TLS-Report-Domain: evil.test",
                1,
            );
            assert_eq!(
                dkimpy_verify(&checks, tampered.as_bytes(), &record),
                Some(false)
            );
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("dkimpy is needed under CI=true and could not be installed")
        }
        None => eprintln!("dkimpy not available: independent DKIM check skipped"),
    }
    assert_eq!(report.organization_name, "Relay Org");
    assert_eq!(report.contact_info, "mailto:postmaster@relay.test");
    assert_eq!(report.policies.len(), 1);
    let p = &report.policies[0];
    assert_eq!(p.policy.policy_domain, "good.test");
    assert_eq!(p.policy.mx_host, ["mx.good.test"]);
    assert!(p.policy.policy_string.contains(&"mode: enforce".to_owned()));
    assert_eq!(p.summary.total_successful_session_count, 1);
    assert_eq!(p.summary.total_failure_session_count, 0);

    // The HTTPS report for badcert.test.
    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let (head, body) = &posts[0];
    assert!(head.starts_with("post /v1/tlsrpt http/1.1\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/tlsrpt+gzip\r\n"),
        "{head}"
    );
    let report = gunzip_report(body);
    let p = &report.policies[0];
    assert_eq!(p.policy.policy_domain, "badcert.test");
    assert_eq!(p.summary.total_successful_session_count, 0);
    assert_eq!(p.summary.total_failure_session_count, 1);
    let f = &p.failure_details[0];
    assert_eq!(f.result_type, ResultType::CertificateNotTrusted);
    assert_eq!(f.receiving_mx_hostname.as_deref(), Some("mx.badcert.test"));
    assert_eq!(f.receiving_ip, Some(IpAddr::from([127, 0, 0, 3])));

    // The report mail's own session was not counted: nothing for
    // reports.test (or anyone) a day later still.
    relay.shutdown().await;
    let saved = std::fs::read_to_string(state.join("tlsrpt/aggregates.json")).unwrap();
    assert!(!saved.contains("reports.test"), "{saved}");
    assert!(!saved.contains("good.test"), "{saved}");
}

#[tokio::test]
async fn disabled_reporting_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let relay = common::start_relay(dir.path(), "").await;
    let later = SystemTime::now() + Duration::from_secs(3 * 86_400);
    assert_eq!(relay.send_tls_reports(later).await.reports, 0);
    relay.shutdown().await;
    assert!(!dir.path().join("state/tlsrpt").exists());
}
