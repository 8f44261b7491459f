//! `idle` mode: open N sessions (EHLO, and STARTTLS with the second EHLO when asked), hold them idle, then
//! QUIT. Once all are open a line `idle-ready <n>` is printed on standard error, so a script can measure the
//! server's memory while the sessions sit idle.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Barrier, Semaphore};

use crate::conn::{Conn, Handshake, Target};
use crate::stats::{Tally, micros};

/// Open `n` sessions, `ramp` at a time; hold them until `hold` after the last one is open (or the deadline);
/// then QUIT them all.
pub(crate) async fn run(target: Target, n: usize, ramp: usize, hold: std::time::Duration) -> Tally {
    let ramp = Arc::new(Semaphore::new(ramp.max(1)));
    // Every task reaches the barrier once, open or not, so the hold starts when all attempts are done.
    let barrier = Arc::new(Barrier::new(n + 1));
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (target, ramp, barrier, open) =
            (target.clone(), ramp.clone(), barrier.clone(), open.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let permit = ramp.acquire_owned().await;
            let started = Instant::now();
            let conn = Conn::open(
                target.addr,
                &target.ehlo,
                target.tls.as_ref(),
                target.deadline,
            )
            .await;
            drop(permit);
            let mut conn = match conn {
                Ok((c, handshake)) => {
                    tally.connections += 1;
                    tally.setup_us.push(micros(started.elapsed()));
                    match handshake {
                        Handshake::Full => tally.full += 1,
                        Handshake::Resumed => tally.resumed += 1,
                        Handshake::None => {}
                    }
                    open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Some(c)
                }
                Err(e) => {
                    tally.connection_failures += 1;
                    tally.error(e.key());
                    None
                }
            };
            barrier.wait().await;
            if let Some(c) = &mut conn {
                let until = tokio::time::Instant::now() + hold;
                if !c.hold(until).await {
                    tally.error("closed while idle");
                }
            }
            if let Some(c) = conn {
                c.quit().await;
            }
            tally
        });
    }
    barrier.wait().await;
    // Readiness is signalled on stderr so that --json output on stdout stays one document.
    let _ = writeln!(
        std::io::stderr(),
        "idle-ready {}",
        open.load(std::sync::atomic::Ordering::Relaxed)
    );
    let mut tally = Tally::default();
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("task: {e}")),
        }
    }
    tally
}
