//! Command counters of a server session, for the line a server logs when a client disconnects (Postfix's
//! `disconnect from … ehlo=1 mail=1 rcpt=0/1 commands=2/3`).

use std::fmt;

use crate::command::Command;

/// The commands a server session counts. `Unknown` is a line whose verb is none of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Verb {
    /// `HELO`.
    Helo,
    /// `EHLO`.
    Ehlo,
    /// `STARTTLS`.
    StartTls,
    /// `MAIL`.
    Mail,
    /// `RCPT`.
    Rcpt,
    /// `BDAT`.
    Bdat,
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `VRFY`.
    Vrfy,
    /// `EXPN`.
    Expn,
    /// `HELP`.
    Help,
    /// `QUIT`.
    Quit,
    /// Any other line.
    Unknown,
}

impl Verb {
    /// Every verb, in the order Postfix lists them.
    pub const ALL: [Self; 14] = [
        Self::Helo,
        Self::Ehlo,
        Self::StartTls,
        Self::Mail,
        Self::Rcpt,
        Self::Bdat,
        Self::Data,
        Self::Rset,
        Self::Noop,
        Self::Vrfy,
        Self::Expn,
        Self::Help,
        Self::Quit,
        Self::Unknown,
    ];

    /// The lower-case name Postfix logs (`ehlo`, `starttls`, `unknown`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Helo => "helo",
            Self::Ehlo => "ehlo",
            Self::StartTls => "starttls",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Bdat => "bdat",
            Self::Data => "data",
            Self::Rset => "rset",
            Self::Noop => "noop",
            Self::Vrfy => "vrfy",
            Self::Expn => "expn",
            Self::Help => "help",
            Self::Quit => "quit",
            Self::Unknown => "unknown",
        }
    }

    /// The verb of a parsed command.
    pub fn of(command: &Command) -> Self {
        match command {
            Command::Ehlo(_) => Self::Ehlo,
            Command::Helo(_) => Self::Helo,
            Command::Mail { .. } => Self::Mail,
            Command::Rcpt { .. } => Self::Rcpt,
            Command::Data => Self::Data,
            Command::Bdat { .. } => Self::Bdat,
            Command::Rset => Self::Rset,
            Command::Noop => Self::Noop,
            Command::Quit => Self::Quit,
            Command::Vrfy(_) => Self::Vrfy,
            Command::Expn(_) => Self::Expn,
            Command::Help(_) => Self::Help,
            Command::StartTls => Self::StartTls,
        }
    }

    /// The verb a command line starts with, whether or not the rest of it parses (a `MAIL` with a bad
    /// address is still counted as `mail`).
    pub fn of_line(line: &[u8]) -> Self {
        let end = line
            .iter()
            .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
            .unwrap_or(line.len());
        let word = &line[..end];
        Self::ALL
            .into_iter()
            .find(|v| *v != Self::Unknown && word.eq_ignore_ascii_case(v.as_str().as_bytes()))
            .unwrap_or(Self::Unknown)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often one command was given, and how often it succeeded (its final reply was 2xx; `DATA` succeeds
/// when its message is accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandCount {
    /// Commands answered with a 2xx final reply.
    pub accepted: u32,
    /// Commands received.
    pub attempted: u32,
}

impl fmt::Display for CommandCount {
    /// Postfix's `1` when every one succeeded, else `accepted/attempted` (`0/1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.accepted == self.attempted {
            write!(f, "{}", self.attempted)
        } else {
            write!(f, "{}/{}", self.accepted, self.attempted)
        }
    }
}

/// The command counters of a session ([`ServerSession::command_counts`](crate::ServerSession::command_counts)).
/// Its `Display` is the tail of Postfix's disconnect line: the verbs given, in Postfix's order, then the
/// total (`ehlo=1 starttls=1 mail=1 rcpt=0/1 data=1 quit=1 commands=5/6`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCounts {
    counts: [CommandCount; Verb::ALL.len()],
}

impl CommandCounts {
    /// The counter of `verb`.
    pub fn get(&self, verb: Verb) -> CommandCount {
        self.counts[verb.index()]
    }

    /// The verbs given at least once, with their counters, in Postfix's order.
    pub fn iter(&self) -> impl Iterator<Item = (Verb, CommandCount)> + '_ {
        Verb::ALL
            .into_iter()
            .map(|v| (v, self.get(v)))
            .filter(|(_, c)| c.attempted > 0)
    }

    /// All commands together.
    pub fn total(&self) -> CommandCount {
        self.counts
            .iter()
            .fold(CommandCount::default(), |t, c| CommandCount {
                accepted: t.accepted.saturating_add(c.accepted),
                attempted: t.attempted.saturating_add(c.attempted),
            })
    }

    pub(crate) fn attempted(&mut self, verb: Verb) {
        let c = &mut self.counts[verb.index()];
        c.attempted = c.attempted.saturating_add(1);
    }

    pub(crate) fn accepted(&mut self, verb: Verb) {
        let c = &mut self.counts[verb.index()];
        c.accepted = c.accepted.saturating_add(1).min(c.attempted);
    }
}

impl fmt::Display for CommandCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (verb, count) in self.iter() {
            write!(f, "{verb}={count} ")?;
        }
        write!(f, "commands={}", self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_like_postfix() {
        let mut c = CommandCounts::default();
        assert_eq!(c.to_string(), "commands=0");
        for (verb, ok) in [
            (Verb::Ehlo, true),
            (Verb::StartTls, true),
            (Verb::Mail, true),
            (Verb::Rcpt, false),
            (Verb::Data, true),
            (Verb::Quit, true),
        ] {
            c.attempted(verb);
            if ok {
                c.accepted(verb);
            }
        }
        assert_eq!(
            c.to_string(),
            "ehlo=1 starttls=1 mail=1 rcpt=0/1 data=1 quit=1 commands=5/6"
        );
        // Never more accepted than attempted.
        c.accepted(Verb::Noop);
        assert_eq!(c.get(Verb::Noop), CommandCount::default());
    }

    #[test]
    fn verbs_of_lines() {
        assert_eq!(Verb::of_line(b"mail FROM:<bad"), Verb::Mail);
        assert_eq!(Verb::of_line(b"STARTTLS\r\n"), Verb::StartTls);
        assert_eq!(Verb::of_line(b"MAILX\r\n"), Verb::Unknown);
        assert_eq!(Verb::of_line(b"unknown\r\n"), Verb::Unknown);
        assert_eq!(Verb::of_line(b""), Verb::Unknown);
    }
}
