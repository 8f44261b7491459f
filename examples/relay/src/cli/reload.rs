//! `reload`: the running relay reads its configuration file again (as
//! `postfix reload`), and this command says whether it took it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CliResult, emit};
use crate::config::Config;
use crate::queue::lock::{LockError, StateLock};
use crate::relay::ReloadReport;

/// How long `reload` waits for the relay's report (a Default Cert to
/// generate again takes a few seconds).
pub const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// `reload`: sends SIGHUP to the relay that holds `config.state_dir`, and
/// waits (at most [`RELOAD_WAIT`]) for its report: the new configuration
/// in force, or the error that kept the running one. The relay reads the
/// file it was started with, checked by the same code as at start.
pub fn reload(config: &Config) -> CliResult {
    let state = &config.state_dir;
    let pid = match StateLock::acquire(state) {
        Ok(_lock) => {
            return Err(format!(
                "no relay is running on state directory {}: nothing to reload",
                state.display()
            )
            .into());
        }
        Err(LockError::Busy { pid: Some(pid), .. }) => pid,
        Err(LockError::Busy { pid: None, .. }) => {
            return Err(format!(
                "a relay holds state directory {} but its process id cannot be read",
                state.display()
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let before = ReloadReport::load(state);
    signal_reload(pid)?;
    let report = wait_for_report(state, pid, before.as_ref(), RELOAD_WAIT).ok_or_else(|| {
        format!(
            "the relay (pid {pid}) was signalled but has not reported within {} s; see its log",
            RELOAD_WAIT.as_secs()
        )
    })?;
    if let Some(error) = report.error {
        return Err(
            format!("the relay (pid {pid}) kept its running configuration: {error}").into(),
        );
    }
    outln!("reloaded: the relay (pid {pid}) runs the new configuration");
    if !report.restart_needed.is_empty() {
        outln!(
            "changed settings that need a restart keep their running values: {}",
            report.restart_needed.join(", ")
        );
    }
    Ok(())
}

#[cfg(unix)]
fn signal_reload(pid: u32) -> CliResult {
    use rustix::process::{Pid, Signal, kill_process};
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("bad process id {pid} in the lock file"))?;
    kill_process(target, Signal::HUP).map_err(|e| format!("cannot signal pid {pid}: {e}"))?;
    Ok(())
}

#[cfg(not(unix))]
fn signal_reload(_pid: u32) -> CliResult {
    Err("reload needs a Unix signal: restart the relay".into())
}

/// The first report of process `pid` newer than `before`, polled until
/// `wait` has passed.
fn wait_for_report(
    state: &Path,
    pid: u32,
    before: Option<&ReloadReport>,
    wait: Duration,
) -> Option<ReloadReport> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(report) = ReloadReport::load(state)
            && report.pid == pid
            && before.is_none_or(|b| b.pid != pid || report.serial > b.serial)
        {
            return Some(report);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
