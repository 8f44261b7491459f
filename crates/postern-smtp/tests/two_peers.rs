//! Our client engine against our server engine, in memory, with the byte streams split at every position:
//! the outcome must be the same every time.

mod common;

use common::{Pair, rcpt};
use postern_smtp::{
    ClientConfig, ClientEvent, DeliveryStatus, Envelope, ReversePath, ServerConfig,
    TransactionReport,
};
use proptest::prelude::*;

const MSG1: &[u8] =
    b"Subject: one\r\n\r\n.leading dot\r\nbare\nlf and bare\rcr\r\n..two dots\r\nend";
const MSG2: &[u8] = b"Subject: two\r\n\r\nsecond message\r\n";

fn outbox() -> Vec<(Envelope, Vec<u8>)> {
    let from = ReversePath::parse("<alice@example.net>").unwrap();
    vec![
        (
            Envelope::new(
                from.clone(),
                [
                    rcpt("<bob@example.org>"),
                    rcpt("<nobody@example.org>"),
                    rcpt("<carol@example.org>"),
                ],
            ),
            MSG1.to_vec(),
        ),
        (
            Envelope::new(from, [rcpt("<dave@example.org>")]),
            MSG2.to_vec(),
        ),
    ]
}

#[derive(Debug, PartialEq)]
struct Outcome {
    stored: Vec<Vec<u8>>,
    reports: Vec<TransactionReport>,
    tls: bool,
    closed_cleanly: bool,
}

fn run(
    server: ServerConfig,
    client: ClientConfig,
    c2s_cuts: Vec<usize>,
    s2c_cuts: Vec<usize>,
) -> Outcome {
    let mut pair = Pair::new(server, client, outbox());
    pair.server.reject_rcpts.push("nobody@".into());
    pair.c2s_cuts = c2s_cuts;
    pair.s2c_cuts = s2c_cuts;
    pair.run();
    let closed_cleanly = pair.client_events.iter().any(|e| {
        matches!(
            e,
            ClientEvent::Closed(postern_smtp::ClientCloseReason::Quit)
        )
    });
    Outcome {
        stored: pair.server.messages.clone(),
        reports: pair.reports.clone(),
        tls: pair.client.is_tls_active(),
        closed_cleanly,
    }
}

fn check_baseline(o: &Outcome, tls: bool) {
    assert_eq!(o.tls, tls, "STARTTLS used when offered");
    assert!(o.closed_cleanly);
    assert_eq!(o.stored.len(), 2);
    // The client normalised bare CR / LF and terminated the last line; the server unstuffed the dots.
    assert_eq!(
        o.stored[0],
        b"Subject: one\r\n\r\n.leading dot\r\nbare\r\nlf and bare\r\ncr\r\n..two dots\r\nend\r\n"
    );
    assert_eq!(o.stored[1], MSG2);
    let statuses: Vec<DeliveryStatus> = o.reports[0].recipients.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Delivered
        ]
    );
    assert_eq!(
        o.reports[0].recipients[1]
            .reply
            .as_ref()
            .unwrap()
            .code()
            .value(),
        550
    );
    assert_eq!(o.reports[1].recipients[0].status, DeliveryStatus::Delivered);
}

fn configs() -> Vec<(&'static str, ServerConfig, ClientConfig)> {
    let mut chunking = ClientConfig::new("client.example.net");
    chunking.prefer_chunking = true;
    let mut no_pipe = ServerConfig::new("mx.example.org");
    no_pipe.pipelining = false;
    let mut plaintext = ServerConfig::new("mx.example.org");
    plaintext.starttls = postern_smtp::StartTlsPolicy::Disabled;
    plaintext.chunking = false;
    vec![
        (
            "default",
            ServerConfig::new("mx.example.org"),
            ClientConfig::new("client.example.net"),
        ),
        ("bdat", ServerConfig::new("mx.example.org"), chunking),
        (
            "no pipelining",
            no_pipe,
            ClientConfig::new("client.example.net"),
        ),
        (
            "plaintext",
            plaintext,
            ClientConfig::new("client.example.net"),
        ),
    ]
}

#[test]
fn baseline() {
    for (name, s, c) in configs() {
        let tls = s.starttls != postern_smtp::StartTlsPolicy::Disabled;
        let o = run(s, c, vec![], vec![]);
        check_baseline(&o, tls);
        eprintln!("{name}: ok");
    }
}

#[test]
fn split_at_every_position() {
    for (name, s, c) in configs() {
        let base = run(s.clone(), c.clone(), vec![], vec![]);
        // Total lengths of both streams, from one run.
        let mut pair = Pair::new(s.clone(), c.clone(), outbox());
        pair.server.reject_rcpts.push("nobody@".into());
        pair.run();
        let (c2s, s2c) = (pair.to_server.len(), pair.to_client.len());
        for p in 1..c2s {
            assert_eq!(
                run(s.clone(), c.clone(), vec![p], vec![]),
                base,
                "{name}: client stream split at {p}"
            );
        }
        for p in 1..s2c {
            assert_eq!(
                run(s.clone(), c.clone(), vec![], vec![p]),
                base,
                "{name}: server stream split at {p}"
            );
        }
        // One byte at a time in both directions.
        let all_c: Vec<usize> = (1..c2s).collect();
        let all_s: Vec<usize> = (1..s2c).collect();
        assert_eq!(
            run(s.clone(), c.clone(), all_c, all_s),
            base,
            "{name}: bytewise"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_splits_same_outcome(c2s in proptest::collection::vec(1usize..1500, 0..40), s2c in proptest::collection::vec(1usize..1500, 0..40), which in 0usize..4) {
        let (_, s, c) = configs().swap_remove(which);
        let base = run(s.clone(), c.clone(), vec![], vec![]);
        prop_assert_eq!(run(s, c, c2s, s2c), base);
    }
}
