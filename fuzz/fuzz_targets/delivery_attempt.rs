//! The sans-IO delivery attempt driven by arbitrary next-hop behaviour under every outbound policy: never
//! panics, always ends, and keeps the rules the exhaustive exploration checks (no transaction byte in
//! plaintext when TLS is required, STARTTLS never twice, nothing read before the handshake acted on after
//! it, plaintext retry only where allowed and on a new connection, a required-TLS refusal never a bounce).
//!
//! Input: a policy selector, then operations: `0` end of connection, `1` the deadline passes, `2` a
//! canned reply (next octet picks it), anything else a raw read of the next `op % 64` octets. Each
//! handshake takes the next octet to pick its outcome.
#![no_main]

// Shared with the exploration, which uses the parts a fuzzer cannot (the replies it chose).
#[allow(dead_code)]
#[path = "../../crates/postern-attempt/tests/support/monitor.rs"]
mod monitor;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use monitor::{Monitor, attempt, drain, handshakes, scenarios};

const CANNED: &[&[u8]] = &[
    b"220 mx.example.org ESMTP\r\n",
    b"250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
    b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 REQUIRETLS\r\n",
    b"250 mx.example.org\r\n",
    b"220 2.0.0 Ready to start TLS\r\n",
    b"220 2.0.0 Ready\r\n250-mx\r\n250 PIPELINING\r\n",
    b"454 4.7.0 TLS not available\r\n",
    b"554 5.7.0 no\r\n",
    b"354 go ahead\r\n",
    b"250 2.1.0 Ok\r\n",
    b"451 4.3.0 later\r\n",
    b"550 5.1.1 unknown\r\n",
    b"421 4.3.2 busy\r\n",
    b"221 2.0.0 Bye\r\n",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let all = scenarios();
    let scenario = &all[usize::from(selector) % all.len()];
    let mut now = Instant::now();
    let mut a = attempt(scenario, now);
    let mut m = Monitor::new(scenario);
    m.exact = false;
    let outcomes = handshakes();
    let fail = |m: &Monitor, e: String| -> ! {
        panic!(
            "{}: {e}\n--- the attempt sent:\n{}",
            scenario.name,
            String::from_utf8_lossy(&m.transcript)
        )
    };
    for _ in 0..512 {
        let mut pick = |_: &mut Monitor| {
            let k = rest.first().map_or(0, |&b| usize::from(b) % outcomes.len());
            rest = rest.get(1..).unwrap_or_default();
            (outcomes[k].clone(), Vec::new())
        };
        match drain(&mut a, &mut m, now, &mut pick) {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => fail(&m, e),
        }
        let Some(deadline) = a.poll_timeout() else {
            fail(&m, "the attempt waits without a deadline".into())
        };
        let Some((&op, tail)) = rest.split_first() else {
            m.lost = true;
            a.handle_eof();
            continue;
        };
        rest = tail;
        match op {
            0 => {
                m.lost = true;
                a.handle_eof();
            }
            1 => {
                m.lost = true;
                now = deadline.max(now) + Duration::from_millis(1);
                a.handle_timeout(now);
            }
            2 => {
                let k = rest.first().map_or(0, |&b| usize::from(b) % CANNED.len());
                rest = rest.get(1..).unwrap_or_default();
                m.on_input(None, None, CANNED[k].len());
                let _ = a.handle_input(CANNED[k]);
            }
            _ => {
                let n = usize::from(op % 64).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                m.on_input(None, None, chunk.len());
                let _ = a.handle_input(chunk);
            }
        }
    }
    fail(&m, "the attempt did not end within 512 operations".into());
});
