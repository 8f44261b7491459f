//! MTA-STS (RFC 8461) end to end, on loopback: a policy host over HTTPS
//! (certificate from the test CA, which the relay trusts through
//! `certificates.ca_bundle`), DNS from a fixed table (MX, TXT, addresses:
//! every `mta-sts.<domain>` is 127.0.0.1, each MX host its own 127.0.0.x),
//! and next hops on the MX port. Every destination is a per-domain
//! `tls = "mta-sts"` override of one relay.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    NextHop, Requests, Serve, Submit, ca, enforce, message, self_signed, start_policy_host,
    start_postern_hop, start_postern_hop_at, submit_raw, submit_requiretls, transport, wait_for,
};
use lettre::AsyncTransport;
use postern_policy::mta_sts::CachedPolicy;
use postern_policy::{StsCache, StsPolicy};
use postern_relay::config::Config;
use postern_relay::envelope::{FailureSource, RecipientState};
use postern_relay::net::dns::FixedResolver;
use postern_relay::net::dns::SystemResolver;
use postern_relay::relay::Relay;
use tokio::net::TcpListener;

const LEAKED_ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: nowhere.test\nmax_age: 86400\n";

fn count(requests: &Requests, host: &str) -> usize {
    requests.lock().unwrap().get(host).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_policies_are_fetched_cached_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();

    // (domain, policy host behaviour, MX certificate); the MX is mx.<domain>.
    let good_policy: &'static str = Box::leak(enforce("mx.good.test").into_boxed_str());
    let bad_policy: &'static str = Box::leak(enforce("*.badcert.test").into_boxed_str());
    let testing_policy = "version: STSv1\nmode: testing\nmx: mx.testing.test\nmax_age: 86400\n";
    let cases: Vec<(&str, Option<Serve>, bool)> = vec![
        ("good.test", Some(Serve::Policy(good_policy)), true),
        ("badcert.test", Some(Serve::Policy(bad_policy)), false),
        ("notlisted.test", Some(Serve::Policy(LEAKED_ENFORCE)), true),
        ("testing.test", Some(Serve::Policy(testing_policy)), false),
        (
            "fetchfail.test",
            Some(Serve::Status("500 Internal Server Error")),
            false,
        ),
        (
            "cached.test",
            Some(Serve::Status("503 Service Unavailable")),
            true,
        ),
        (
            "redirect.test",
            Some(Serve::Redirect(
                "https://mta-sts.target.test/.well-known/mta-sts.txt",
            )),
            false,
        ),
        ("notxt.test", None, false),
    ];
    let mut serve = HashMap::new();
    serve.insert(
        "mta-sts.target.test".to_owned(),
        Serve::Policy(LEAKED_ENFORCE),
    );
    let mut names = vec!["mta-sts.target.test".to_owned()];
    for (d, s, _) in &cases {
        names.push(format!("mta-sts.{d}"));
        if let Some(s) = s {
            serve.insert(format!("mta-sts.{d}"), s.clone());
        }
    }
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let (https_port, requests) =
        start_policy_host(&ca().leaf(&names_ref, false, -1, 90), serve).await;

    // Next hops: mx.<domain> on 127.0.0.<n>, all on one port.
    let probe = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let mx_port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut dns =
        FixedResolver::new().with_address("mta-sts.target.test", IpAddr::from([127, 0, 0, 1]));
    let mut hops: HashMap<&str, NextHop> = HashMap::new();
    for (n, (d, s, ca_signed)) in cases.iter().enumerate() {
        let mx = format!("mx.{d}");
        let ip = IpAddr::from([127, 0, 0, u8::try_from(n + 2).unwrap()]);
        let cert = if *ca_signed {
            ca().leaf(&[&mx], false, -1, 90)
        } else {
            self_signed(&[&mx], false)
        };
        hops.insert(
            d,
            start_postern_hop_at(Some(&cert), &format!("{ip}:{mx_port}")).await,
        );
        dns = dns
            .with_mx(d, 10, &mx)
            .with_address(&mx, ip)
            .with_address(&format!("mta-sts.{d}"), IpAddr::from([127, 0, 0, 1]));
        if s.is_some() {
            // An unrelated TXT record next to the STS one is ignored (§3.1).
            let id = if *d == "cached.test" { "new2" } else { "id1" };
            dns = dns.with_txt(
                &format!("_mta-sts.{d}"),
                Ok(vec![format!("v=STSv1; id={id};"), "v=spf1 -all".to_owned()]),
            );
        } else {
            dns = dns.with_txt(
                &format!("_mta-sts.{d}"),
                Err(postern_relay::net::dns::LookupError::NoSuchDomain),
            );
        }
    }

    // cached.test: a policy fetched before a restart (id "old") whose MX list
    // excludes the real MX; its refresh under the new id fails.
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mut cache = StsCache::new();
    cache.cached = Some(CachedPolicy::new(
        "old",
        StsPolicy::parse(LEAKED_ENFORCE).unwrap(),
        now - 60,
    ));
    std::fs::create_dir_all(state.join("mta-sts")).unwrap();
    std::fs::write(
        state.join("mta-sts/cached.test.json"),
        serde_json::to_vec(&cache).unwrap(),
    )
    .unwrap();

    let mut toml = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         delivery_workers = 4\n[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\nclient_reply = \"10s\"\ntls_handshake = \"5s\"\n\
         [mta_sts]\nfetch_timeout = \"10s\"\nhttps_port = {https_port}\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n\
         [tls.outbound]\ntls = \"opportunistic\"\n",
        state.display(),
        dir.path().join("ca.pem").display()
    );
    for (d, _, _) in &cases {
        toml.push_str(&format!(
            "[tls.outbound.domains.\"{d}\"]\ntls = \"mta-sts\"\n"
        ));
    }
    let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let relay = Relay::start_with_resolver(config, SystemResolver::fixed(dns), mx_port)
        .await
        .unwrap();
    let addr = relay.local_addrs()[0];
    for (d, _, _) in &cases {
        transport(addr, Submit::Plain)
            .send(message(&format!("user@{d}"), d))
            .await
            .unwrap();
    }
    let deferred = ["badcert.test", "notlisted.test", "cached.test"];
    let scan = wait_for(dir.path(), Duration::from_secs(60), "first attempts", |s| {
        s.messages.len() == deferred.len() && s.messages.iter().all(|m| m.envelope.attempts >= 1)
    })
    .await;

    for m in &scan.messages {
        let r = &m.envelope.recipients[0];
        let d = r.address.host().to_string();
        let d = d.as_str();
        assert!(
            deferred.contains(&d),
            "{d} should have been delivered: {r:?}"
        );
        assert_eq!(r.state, RecipientState::Deferred, "{d}");
        let f = r.last_failure.as_ref().unwrap();
        let code = f.code.to_string();
        let log = hops[d].log.lock().unwrap();
        assert_eq!(log.plaintext_mail, 0, "{d}: MAIL in plaintext");
        assert!(log.delivered.is_empty(), "{d}");
        match d {
            // §5 enforce: the certificate must be valid for the MX name.
            "badcert.test" => {
                assert_eq!(code, "4.7.5", "{d}: {f:?}");
                assert!(f.result_type.is_some(), "{d}: {f:?}");
                assert_eq!(log.connections, 1, "{d}");
                // Our policy decided: a description, no reply or code in it.
                assert_eq!(f.source, FailureSource::Local, "{d}: {f:?}");
                assert_eq!(
                    f.text, "TLS handshake failed: certificate not trusted",
                    "{d}: {f:?}"
                );
            }
            // §4.1 / §5: an MX outside the policy is not contacted; the
            // cached policy (§3.3) applies while the refresh fails.
            "notlisted.test" | "cached.test" => {
                assert!(code.starts_with("4.7."), "{d}: {f:?}");
                assert_eq!(
                    f.result_type.map(|t| t.as_str()),
                    Some("validation-failure"),
                    "{d}"
                );
                assert_eq!(log.connections, 0, "{d}: MX outside the policy contacted");
            }
            _ => unreachable!(),
        }
    }
    for d in [
        "good.test",
        "testing.test",
        "fetchfail.test",
        "redirect.test",
        "notxt.test",
    ] {
        let delivered = hops[d].delivered_to(&format!("user@{d}"));
        assert_eq!(delivered.len(), 1, "{d}");
        assert!(delivered[0].tls, "{d}: delivered without TLS");
    }
    // The redirect was not followed; the failed refresh of cached.test was
    // attempted once and persisted with its failure.
    assert_eq!(count(&requests, "mta-sts.redirect.test"), 1);
    assert_eq!(count(&requests, "mta-sts.target.test"), 0, "3xx followed");
    assert_eq!(count(&requests, "mta-sts.cached.test"), 1);
    assert_eq!(count(&requests, "mta-sts.notxt.test"), 0);
    let persisted: StsCache =
        serde_json::from_slice(&std::fs::read(state.join("mta-sts/cached.test.json")).unwrap())
            .unwrap();
    assert_eq!(persisted.cached.as_ref().unwrap().id, "old");
    assert_eq!(persisted.failed_fetch.as_ref().unwrap().0, "new2");
    let good: StsCache =
        serde_json::from_slice(&std::fs::read(state.join("mta-sts/good.test.json")).unwrap())
            .unwrap();
    assert_eq!(
        good.cached.unwrap().policy,
        StsPolicy::parse(good_policy).unwrap()
    );

    // Same id: the cached policy is used, no second request. A failed id is
    // not fetched again within five minutes.
    for d in ["good.test", "fetchfail.test"] {
        transport(addr, Submit::Plain)
            .send(message(&format!("second@{d}"), d))
            .await
            .unwrap();
    }
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "second messages",
        |s| s.messages.len() == deferred.len(),
    )
    .await;
    for d in ["good.test", "fetchfail.test"] {
        assert_eq!(hops[d].delivered_to(&format!("second@{d}")).len(), 1, "{d}");
        assert_eq!(
            count(&requests, &format!("mta-sts.{d}")),
            1,
            "{d} refetched"
        );
    }
    relay.shutdown().await;
}

/// RFC 8461 §10.2: cached policies are refreshed about daily without any mail
/// to their domain; a recent one is left alone, and a failed refresh keeps the
/// cached policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_policies_are_refreshed_without_mail() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    let renewed: &'static str = Box::leak(enforce("mx2.idle.test").into_boxed_str());
    let mut serve = HashMap::new();
    serve.insert("mta-sts.idle.test".to_owned(), Serve::Policy(renewed));
    serve.insert("mta-sts.fresh.test".to_owned(), Serve::Policy(renewed));
    serve.insert(
        "mta-sts.down.test".to_owned(),
        Serve::Status("503 Service Unavailable"),
    );
    let names = [
        "mta-sts.idle.test",
        "mta-sts.fresh.test",
        "mta-sts.down.test",
    ];
    let (https_port, requests) = start_policy_host(&ca().leaf(&names, false, -1, 90), serve).await;
    let mut dns = FixedResolver::new();
    for d in ["idle.test", "fresh.test", "down.test"] {
        dns = dns
            .with_address(&format!("mta-sts.{d}"), IpAddr::from([127, 0, 0, 1]))
            .with_txt(
                &format!("_mta-sts.{d}"),
                Ok(vec!["v=STSv1; id=id1;".to_owned()]),
            );
    }
    // Cached policies under the same id: two fetched two days ago (a refresh
    // is due), one a minute ago; all valid for 30 days.
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let old = "version: STSv1\nmode: enforce\nmx: mx1.example\nmax_age: 2592000\n";
    std::fs::create_dir_all(state.join("mta-sts")).unwrap();
    for (d, age) in [
        ("idle.test", 2 * 86_400),
        ("fresh.test", 60),
        ("down.test", 2 * 86_400),
    ] {
        let mut cache = StsCache::new();
        cache.cached = Some(CachedPolicy::new(
            "id1",
            StsPolicy::parse(old).unwrap(),
            now - age,
        ));
        std::fs::write(
            state.join(format!("mta-sts/{d}.json")),
            serde_json::to_vec(&cache).unwrap(),
        )
        .unwrap();
    }
    let toml = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [mta_sts]\nfetch_timeout = \"10s\"\nhttps_port = {https_port}\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n",
        state.display(),
        dir.path().join("ca.pem").display()
    );
    let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let relay = Relay::start_with_resolver(config, SystemResolver::fixed(dns), 25)
        .await
        .unwrap();
    assert_eq!(relay.refresh_mta_sts().await, 3);

    let cached = |d: &str| -> StsCache {
        serde_json::from_slice(&std::fs::read(state.join(format!("mta-sts/{d}.json"))).unwrap())
            .unwrap()
    };
    assert_eq!(count(&requests, "mta-sts.idle.test"), 1);
    let idle = cached("idle.test").cached.unwrap();
    assert_eq!(idle.policy, StsPolicy::parse(renewed).unwrap());
    assert!(idle.fetched_at >= now, "{idle:?}");
    assert_eq!(
        count(&requests, "mta-sts.fresh.test"),
        0,
        "refreshed too early"
    );
    assert_eq!(
        cached("fresh.test").cached.unwrap().policy,
        StsPolicy::parse(old).unwrap()
    );
    // §3.3: a failed refresh keeps the cached policy and records the failure.
    assert_eq!(count(&requests, "mta-sts.down.test"), 1);
    let down = cached("down.test");
    assert_eq!(down.cached.unwrap().policy, StsPolicy::parse(old).unwrap());
    assert_eq!(down.failed_fetch.unwrap().0, "id1");

    // A second pass within the day fetches nothing more.
    relay.refresh_mta_sts().await;
    assert_eq!(count(&requests, "mta-sts.idle.test"), 1);
    assert_eq!(
        count(&requests, "mta-sts.down.test"),
        1,
        "retried within 5 minutes"
    );
    relay.shutdown().await;
}

/// RFC 8689 §4.2.1: a REQUIRETLS message to a domain reached by MX is
/// delivered under the domain's MTA-STS policy whatever mode is configured
/// for it (here the default, opportunistic), and only over TLS verified
/// against that policy; without a policy its MX is not found securely and it
/// comes back `5.7.30`. §5: a message with `TLS-Required: No` is delivered
/// although the destination's MTA-STS policy fails (a message without the
/// header is deferred).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_applies_mta_sts_and_tls_required_no_relaxes_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    // (domain, MTA-STS policy published, MX certificate from the test CA)
    let cases = [
        ("sts.test", true, true),
        ("sts-bad-cert.test", true, false),
        ("no-sts.test", false, true),
        ("optional.test", true, false),
    ];
    let mut serve = HashMap::new();
    let mut names = Vec::new();
    for (d, published, _) in cases {
        names.push(format!("mta-sts.{d}"));
        if published {
            let policy: &'static str = Box::leak(enforce(&format!("mx.{d}")).into_boxed_str());
            serve.insert(format!("mta-sts.{d}"), Serve::Policy(policy));
        }
    }
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let (https_port, _) = start_policy_host(&ca().leaf(&names_ref, false, -1, 90), serve).await;
    let probe = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let mx_port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut dns = FixedResolver::new();
    let mut hops: HashMap<&str, NextHop> = HashMap::new();
    for (n, (d, published, ca_signed)) in cases.into_iter().enumerate() {
        let mx = format!("mx.{d}");
        let ip = IpAddr::from([127, 0, 0, u8::try_from(n + 2).unwrap()]);
        let cert = if ca_signed {
            ca().leaf(&[&mx], false, -1, 90)
        } else {
            self_signed(&[&mx], false)
        };
        hops.insert(
            d,
            start_postern_hop_at(Some(&cert), &format!("{ip}:{mx_port}")).await,
        );
        dns = dns
            .with_mx(d, 10, &mx)
            .with_address(&mx, ip)
            .with_address(&format!("mta-sts.{d}"), IpAddr::from([127, 0, 0, 1]))
            .with_txt(
                &format!("_mta-sts.{d}"),
                if published {
                    Ok(vec!["v=STSv1; id=1;".to_owned()])
                } else {
                    Err(postern_relay::net::dns::LookupError::NoSuchDomain)
                },
            );
    }
    // The sender's domain: bounces land there.
    let sink = start_postern_hop(None).await;
    let toml = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\nclient_reply = \"10s\"\ntls_handshake = \"5s\"\n\
         [mta_sts]\nfetch_timeout = \"10s\"\nhttps_port = {https_port}\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"{}\"\n\
         [routes]\n\"client.test\" = \"127.0.0.1:{}\"\n\
         [tls.outbound.domains.\"optional.test\"]\ntls = \"mta-sts\"\n",
        state.display(),
        dir.path().join("ca.pem").display(),
        sink.addr.port()
    );
    let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let relay = Relay::start_with_resolver(config, SystemResolver::fixed(dns), mx_port)
        .await
        .unwrap();
    let addr = relay.local_addrs()[0];
    for to in ["bob@sts.test", "bob@sts-bad-cert.test", "bob@no-sts.test"] {
        let r = submit_requiretls(addr, "alice@client.test", to, "secret").await;
        assert!(r.starts_with("250 "), "{to}: {r}");
    }
    let r = submit_raw(
        addr,
        "alice@client.test",
        "relaxed@optional.test",
        "TLS-Required: No\r\nSubject: relaxed\r\n\r\nDeliver anyway.\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    let r = submit_raw(
        addr,
        "alice@client.test",
        "strict@optional.test",
        "Subject: strict\r\n\r\nHeld by the policy.\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");

    let scan = wait_for(
        dir.path(),
        Duration::from_secs(60),
        "the attempts and the bounces",
        |s| {
            s.messages.len() == 1
                && s.messages[0].envelope.attempts >= 1
                && sink.delivered_to("alice@client.test").len() == 2
        },
    )
    .await;
    // Verified against the policy: delivered over TLS.
    let delivered = hops["sts.test"].delivered_to("bob@sts.test");
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].tls);
    // A certificate that does not verify, or no policy: returned 5.7.30,
    // never sent; no MAIL in plaintext anywhere.
    for d in ["sts-bad-cert.test", "no-sts.test"] {
        let log = hops[d].log.lock().unwrap();
        assert!(log.delivered.is_empty(), "{d}");
        assert_eq!(log.plaintext_mail, 0, "{d}");
    }
    assert_eq!(
        hops["no-sts.test"].log.lock().unwrap().connections,
        0,
        "an MX not found securely is not contacted"
    );
    let bounces: Vec<String> = sink
        .delivered_to("alice@client.test")
        .iter()
        .map(|b| String::from_utf8_lossy(&b.content).into_owned())
        .collect();
    for d in ["sts-bad-cert.test", "no-sts.test"] {
        let text = bounces
            .iter()
            .find(|t| t.contains(&format!("Final-Recipient: rfc822; bob@{d}")))
            .unwrap_or_else(|| panic!("no bounce for {d}: {bounces:#?}"));
        assert!(text.contains("Status: 5.7.30"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
    // TLS-Required: No: delivered despite the failing policy (TLS is still
    // used when offered); the same message without the header waits.
    let relaxed = hops["optional.test"].delivered_to("relaxed@optional.test");
    assert_eq!(relaxed.len(), 1);
    assert!(relaxed[0].tls);
    assert!(
        hops["optional.test"]
            .delivered_to("strict@optional.test")
            .is_empty()
    );
    let held = &scan.messages[0].envelope.recipients[0];
    assert_eq!(held.address.to_string(), "strict@optional.test");
    assert_eq!(held.state, RecipientState::Deferred);
    assert_eq!(
        held.last_failure.as_ref().unwrap().code.to_string(),
        "4.7.5"
    );
    relay.shutdown().await;
}
