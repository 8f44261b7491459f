//! The delivery log: every recipient outcome of an attempt gets exactly one
//! Postfix-style `QUEUEID: to=<…>, relay=…, delay=…, delays=a/b/c/d, dsn=…, status=…` line,
//! routing failures (null MX, NXDOMAIN, DNS lookups that fail, no address)
//! included; a host passed over for the next MX gets a line of its own.

mod capture;
mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Submit, message, start_postern_hop, transport, wait_for};
use lettre::AsyncTransport;
use postern_relay::config::Config;
use postern_relay::net::dns::FixedResolver;
use postern_relay::net::dns::SystemResolver;
use postern_relay::relay::Relay;

async fn start(
    dir: &std::path::Path,
    resolver: SystemResolver,
    mx_port: u16,
    routes: &str,
) -> Relay {
    let text = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [timeouts]\nconnect = \"5s\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n\
         [routes]\n{routes}\n",
        dir.join("state").display(),
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Relay::start_with_resolver(config, resolver, mx_port)
        .await
        .unwrap()
}

/// The one `to=<rcpt>` line, checked to contain each of `parts`.
fn one_line(rcpt: &str, parts: &[&str]) {
    let lines = capture::lines_with(&format!("to=<{rcpt}>,"));
    assert_eq!(lines.len(), 1, "{rcpt}: {lines:#?}");
    // Postfix's shape: the queue id first, then delay= and four delays=.
    let line = &lines[0];
    let at = line
        .find(&format!(": to=<{rcpt}>, relay="))
        .unwrap_or_else(|| panic!("no queue id first: {line}"));
    let id = line[..at].rsplit(' ').next().unwrap_or_default();
    assert!(!id.is_empty() && !id.contains(':'), "{line}");
    let delays = line
        .split(", delays=")
        .nth(1)
        .and_then(|d| d.split(',').next())
        .unwrap_or_else(|| panic!("no delays=: {line}"));
    let values: Vec<f64> = delays.split('/').filter_map(|d| d.parse().ok()).collect();
    assert_eq!(values.len(), 4, "{line}");
    for part in parts {
        assert!(
            lines[0].contains(part),
            "{rcpt}: {part:?} missing in {}",
            lines[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_outcome_is_logged_once() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_postern_hop(None).await;
    let mx = start_postern_hop(None).await;
    // no-address.test: neither MX host has an address; no-host.test: no MX
    // and no address record; two-mx.test: the first MX (127.0.0.3) refuses
    // connections, the second delivers.
    let dns = FixedResolver::new()
        .with_mx("null-mx.test", 0, ".")
        .with_mx("no-address.test", 10, "mx.no-address.test")
        .with_mx("no-address.test", 20, "mx2.no-address.test")
        .with_txt("no-host.test", Ok(Vec::new()))
        .with_mx("two-mx.test", 10, "mx1.two-mx.test")
        .with_mx("two-mx.test", 20, "mx2.two-mx.test")
        .with_address("mx1.two-mx.test", IpAddr::from([127, 0, 0, 3]))
        .with_address("mx2.two-mx.test", IpAddr::from([127, 0, 0, 1]));
    let relay = start(
        dir.path(),
        SystemResolver::fixed(dns),
        mx.addr.port(),
        &format!("\"client.test\" = \"127.0.0.1:{}\"", sink.addr.port()),
    )
    .await;
    let addr = relay.local_addrs()[0];
    for rcpt in [
        "a@null-mx.test",
        "b@nxdomain.test",
        "c@no-address.test",
        "d@two-mx.test",
        "e@no-host.test",
    ] {
        transport(addr, Submit::Plain)
            .send(message(rcpt, rcpt))
            .await
            .unwrap();
    }
    // Left queued: no-address.test (deferred).
    wait_for(dir.path(), Duration::from_secs(60), "the attempts", |s| {
        s.messages.len() == 1 && s.messages.iter().all(|m| m.envelope.attempts == 1)
    })
    .await;
    // The bounces of the three that failed reached the sender's domain.
    let start = std::time::Instant::now();
    while sink.delivered_to("alice@client.test").len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "bounces missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one_line(
        "a@null-mx.test",
        &[
            "relay=none",
            "delays=",
            "dsn=5.1.10, status=bounced (null MX: null-mx.test accepts no mail)",
        ],
    );
    one_line(
        "b@nxdomain.test",
        &[
            "relay=none",
            "dsn=5.1.2, status=bounced (domain nxdomain.test does not exist)",
        ],
    );
    one_line(
        "c@no-address.test",
        &[
            "relay=none",
            "dsn=4.4.3, status=deferred (address lookup for mx2.no-address.test failed",
        ],
    );
    let passed = capture::lines_with("address lookup for mx.no-address.test failed");
    assert_eq!(passed.len(), 1, "{passed:#?}");
    assert!(passed[0].contains("trying the next host"), "{passed:#?}");
    one_line(
        "e@no-host.test",
        &[
            "relay=none",
            "dsn=5.4.4, status=bounced (no-host.test has no MX and no address record)",
        ],
    );
    // The first MX of two-mx.test was passed over: a line of its own, then
    // one `to=` line for the delivery.
    one_line(
        "d@two-mx.test",
        &["relay=mx2.two-mx.test[127.0.0.1]", "dsn=2.0.0, status=sent"],
    );
    let passed = capture::lines_with("relay=mx1.two-mx.test");
    assert_eq!(passed.len(), 1, "{passed:#?}");
    assert!(passed[0].contains("trying the next host"), "{passed:#?}");
    assert!(!passed[0].contains("to=<"), "{passed:#?}");
    assert_eq!(mx.delivered_to("d@two-mx.test").len(), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lookup_failures_are_logged_as_deferrals() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let relay = start(
        dir.path(),
        SystemResolver::unavailable("no resolver in this test"),
        25,
        "",
    )
    .await;
    transport(relay.local_addrs()[0], Submit::Plain)
        .send(message("f@dns-down.test", "dns down"))
        .await
        .unwrap();
    wait_for(dir.path(), Duration::from_secs(30), "the attempt", |s| {
        s.messages.iter().all(|m| m.envelope.attempts == 1)
    })
    .await;
    one_line(
        "f@dns-down.test",
        &[
            "relay=none",
            "delays=",
            "dsn=4.4.3, status=deferred (MX lookup for dns-down.test failed: no resolver in this test)",
        ],
    );
    relay.shutdown().await;
}

/// One SMTP transaction in plaintext, command by command (lettre cannot send
/// `MAIL FROM:<>`, `RCPT TO:<Postmaster>` or ORCPT). Returns the reply to the
/// final dot.
async fn transaction(addr: std::net::SocketAddr, commands: &[&str], content: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    async fn reply(io: &mut BufReader<tokio::net::TcpStream>) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            io.read_line(&mut l).await.unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }
    let mut io = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    reply(&mut io).await;
    for cmd in ["EHLO client.test"].iter().chain(commands).chain(&["DATA"]) {
        io.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .unwrap();
        let r = reply(&mut io).await;
        assert!(r.starts_with('2') || r.starts_with("354"), "{cmd}: {r}");
    }
    io.get_mut()
        .write_all(format!("{content}\r\n.\r\nQUIT\r\n").as_bytes())
        .await
        .unwrap();
    reply(&mut io).await
}

/// The paths a client gave are logged, queued and relayed as given: `from=<>`
/// for the null reverse path, a domain-less `<Postmaster>` as the postmaster
/// of the relay's domain, an ORCPT back in the bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_paths_are_logged_and_relayed_as_given() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_postern_hop(None).await;
    let port = sink.addr.port();
    // `localhost` (the default accepted domain) is delivered to the loopback
    // host at the MX port: the sink.
    let relay = start(
        dir.path(),
        SystemResolver::fixed(FixedResolver::new()),
        port,
        &format!(
            "\"paths-client.test\" = \"127.0.0.1:{port}\"\n\"paths-dest.test\" = \"127.0.0.1:{port}\""
        ),
    )
    .await;
    let addr = relay.local_addrs()[0];
    let null = transaction(
        addr,
        &["MAIL FROM:<>", "RCPT TO:<Postmaster>"],
        "Subject: null sender",
    )
    .await;
    assert!(null.starts_with("250 2.0.0 Ok: queued as "), "{null}");
    let orcpt = transaction(
        addr,
        &[
            "MAIL FROM:<alice@paths-client.test>",
            "RCPT TO:<bob@paths-dest.test> ORCPT=rfc822;bob+40orig.test",
            "RCPT TO:<carol@nxdomain.test> ORCPT=rfc822;carol+40orig.test",
        ],
        "Subject: orcpt",
    )
    .await;
    assert!(orcpt.starts_with("250 2.0.0 Ok: queued as "), "{orcpt}");
    wait_for(dir.path(), Duration::from_secs(60), "the deliveries", |s| {
        s.messages.is_empty()
            && !sink.delivered_to("postmaster@localhost").is_empty()
            && !sink.delivered_to("bob@paths-dest.test").is_empty()
            && !sink.delivered_to("alice@paths-client.test").is_empty()
    })
    .await;

    let queued = |reply: &str, from: &str| {
        let id = reply.trim_end().rsplit(' ').next().unwrap().to_owned();
        let lines = capture::lines_with(&format!("queue_id={id} from={from} nrcpt="));
        assert_eq!(lines.len(), 1, "{id}: {lines:#?}");
        assert!(lines[0].contains("message queued"), "{lines:#?}");
    };
    queued(&null, "<>");
    queued(&orcpt, "<alice@paths-client.test>");
    one_line("postmaster@localhost", &["dsn=2.0.0, status=sent"]);
    one_line("bob@paths-dest.test", &["dsn=2.0.0, status=sent"]);
    one_line("carol@nxdomain.test", &["dsn=5.1.2, status=bounced"]);
    let to_postmaster = &sink.delivered_to("postmaster@localhost")[0];
    let text = String::from_utf8_lossy(&to_postmaster.content);
    assert!(text.contains("\tfor <postmaster@localhost>; "), "{text}");
    let bounce = &sink.delivered_to("alice@paths-client.test")[0];
    let text = String::from_utf8_lossy(&bounce.content);
    assert!(text.contains("To: <alice@paths-client.test>\r\n"), "{text}");
    assert!(
        text.contains(
            "Original-Recipient: rfc822;carol+40orig.test\r\nFinal-Recipient: rfc822; carol@nxdomain.test\r\n"
        ),
        "{text}"
    );
    relay.shutdown().await;
}
