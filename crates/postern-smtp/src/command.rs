//! Commands: RFC 5321 section 4.1.1 (verbs and arguments), 4.1.2 (grammar), ESMTP parameters of RFC 1870
//! (SIZE), RFC 6152 (BODY=8BITMIME), RFC 3030 (BODY=BINARYMIME, BDAT), RFC 6531 (SMTPUTF8), RFC 8689
//! (REQUIRETLS) and RFC 3461 (RET, ENVID, NOTIFY, ORCPT).

use std::fmt::Write as _;

use crate::address::{
    AddressError, ForwardPath, ForwardPathRef, Host, HostRef, ReversePath, ReversePathRef,
};
use crate::reply::Reply;

mod simple;

pub use postern_types::{Body, Ret};

/// Parameters of MAIL FROM (RFC 5321 4.1.1.2 `Mail-parameters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MailParams {
    /// `SIZE=` declared message size (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531 3.4).
    pub smtputf8: bool,
    /// `REQUIRETLS` (RFC 8689 section 4).
    pub requiretls: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` xtext as sent (RFC 3461 4.4).
    pub envid: Option<String>,
}

/// `NOTIFY=` (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    /// `NEVER`.
    Never,
    /// A non-empty combination of `SUCCESS`, `FAILURE`, `DELAY`.
    On {
        /// `SUCCESS`.
        success: bool,
        /// `FAILURE`.
        failure: bool,
        /// `DELAY`.
        delay: bool,
    },
}

/// Parameters of RCPT TO (RFC 5321 4.1.1.3 `Rcpt-parameters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461 4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` as sent (RFC 3461 4.2): (address type, encoded address).
    pub orcpt: Option<(String, String)>,
}

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO domain / address-literal` (RFC 5321 4.1.1.1).
    Ehlo(Host),
    /// `HELO domain` (an address literal is accepted too, as most servers do).
    Helo(Host),
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The reverse path.
        from: ReversePath,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The forward path.
        to: ForwardPath,
        /// ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030 section 2).
    Bdat {
        /// Octets of chunk content following the command line.
        size: u64,
        /// `LAST` given: this chunk ends the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [string]`.
    Help(Option<String>),
    /// `STARTTLS` (RFC 3207 section 4; no parameters).
    StartTls,
}

/// Why a command line was refused. Each maps to the reply the server sends ([`CommandError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The line is longer than the command line limit (RFC 5321 4.5.3.1.4).
    #[error("line too long")]
    LineTooLong,
    /// A bare CR or LF inside the line (only CRLF ends a command line, RFC 5321 2.3.8).
    #[error("bare cr or lf in command line")]
    BareLineEnding,
    /// The line is not UTF-8, or holds a NUL or other control character.
    #[error("invalid characters in command line")]
    InvalidCharacters,
    /// Unknown verb.
    #[error("command not recognized")]
    Unrecognized,
    /// Known verb, bad arguments; carries the usage text.
    #[error("syntax error, usage: {0}")]
    Syntax(&'static str),
    /// The MAIL FROM path is invalid.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The RCPT TO path is invalid.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// An ESMTP parameter this implementation does not know (RFC 5321 4.1.1.11: 555).
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
    /// A known ESMTP parameter with a bad or repeated value.
    #[error("bad value for parameter {0}")]
    InvalidParameter(String),
}

impl CommandError {
    /// The reply a server sends for this error (texts in the Postfix style).
    pub fn reply(&self) -> Reply {
        match self {
            Self::LineTooLong => Reply::fixed(500, (5, 5, 0), "Error: line too long"),
            Self::BareLineEnding => {
                Reply::fixed(500, (5, 5, 2), "Error: bare <CR> or <LF> in command")
            }
            Self::InvalidCharacters => Reply::fixed(500, (5, 5, 2), "Error: bad syntax"),
            Self::Unrecognized => Reply::fixed(502, (5, 5, 2), "Error: command not recognized"),
            Self::Syntax(usage) => Reply::fixed(501, (5, 5, 4), format!("Syntax: {usage}")),
            Self::BadSender(_) => Reply::fixed(501, (5, 1, 7), "Bad sender address syntax"),
            Self::BadRecipient(_) => Reply::fixed(501, (5, 1, 3), "Bad recipient address syntax"),
            Self::UnknownParameter(p) => Reply::fixed(
                555,
                (5, 5, 4),
                format!("Unsupported option: {}", printable(p)),
            ),
            Self::InvalidParameter(p) => {
                Reply::fixed(501, (5, 5, 4), format!("Bad {} syntax", printable(p)))
            }
        }
    }
}

/// Keep peer-provided text printable and short before echoing it in a reply.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// RFC 5321 4.1.2 `esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`.
fn is_keyword(k: &str) -> bool {
    k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// RFC 3461 4 `xtext = *( xchar / hexchar )`, xchar = `!`..`~` except `+` and `=`, hexchar = `+` 2 uppercase hex.
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |x: Option<&u8>| {
                    x.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                };
                if !hex(b.get(i + 1)) || !hex(b.get(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

/// RFC 3461 4.4: the ENVID value is xtext of 1 to 100 characters.
fn envid(v: &str) -> Option<&str> {
    (!v.is_empty() && v.len() <= 100 && is_xtext(v)).then_some(v)
}

/// RFC 3461 4.1: the NOTIFY value, `"NEVER"` or a comma-separated list of `"SUCCESS"`, `"FAILURE"`, `"DELAY"`,
/// each at most once.
fn notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for item in v.split(',') {
        let flag = match which(item, &["SUCCESS", "FAILURE", "DELAY"])? {
            0 => &mut success,
            1 => &mut failure,
            _ => &mut delay,
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(Notify::On {
        success,
        failure,
        delay,
    })
}

/// RFC 3461 4.2: the ORCPT value, `addr-type ";" xtext`, at most 500 characters; returns (type, address).
fn orcpt(v: &str) -> Option<(&str, &str)> {
    let (kind, addr) = v.split_once(';')?;
    (is_keyword(kind) && !addr.is_empty() && v.len() <= 500 && is_xtext(addr))
        .then_some((kind, addr))
}

/// `1*20DIGIT` as a `u64` (RFC 1870 `size-value`, RFC 3030 `chunk-size`).
fn parse_decimal(v: &str) -> Option<u64> {
    (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
}

/// Split `FROM:<path> params` into the path and the parameter list, tolerating spaces after the colon (many
/// clients send `MAIL FROM: <a@b>`).
fn split_path<'a>(arg: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start_matches(' ');
    if !rest.starts_with('<') {
        return None;
    }
    let b = rest.as_bytes();
    // The path ends at the first '>' outside a quoted string. Octet search: '"', '\\' and '>' never occur inside
    // a multi-octet UTF-8 character.
    let end = match b.iter().position(|&c| c == b'>' || c == b'"')? {
        k if b[k] == b'>' => k,
        _ => {
            let mut quoted = false;
            let mut escaped = false;
            let mut found = None;
            for (i, &c) in b.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if quoted && c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    quoted = !quoted;
                } else if c == b'>' && !quoted {
                    found = Some(i);
                    break;
                }
            }
            found?
        }
    };
    let (path, params) = rest.split_at(end + 1);
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    Some((path, params.trim_start_matches(' ')))
}

/// The `SP`-separated `keyword[=value]` items of a parameter list (empty items skipped). Octet searches: a
/// plain loop is faster than a SIMD search on these few octets, and ' ' and '=' never occur inside a multi-octet
/// UTF-8 character, so every cut is on a character boundary.
fn params(list: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return None;
        }
        let end = rest.bytes().position(|c| c == b' ').unwrap_or(rest.len());
        let (item, tail) = rest.split_at(end);
        rest = tail;
        Some(match item.bytes().position(|c| c == b'=') {
            Some(k) => (&item[..k], Some(&item[k + 1..])),
            None => (item, None),
        })
    })
}

/// Case-insensitive match of `s` against one of `names` (upper-case ASCII); returns its index.
fn which(s: &str, names: &[&str]) -> Option<usize> {
    names.iter().position(|n| s.eq_ignore_ascii_case(n))
}

fn mail_params(list: &str) -> Result<MailParamsRef<'_>, CommandError> {
    let mut m = MailParamsRef::default();
    for (key, value) in params(list) {
        let bad = || CommandError::InvalidParameter(key.to_ascii_uppercase());
        if !is_keyword(key) {
            return Err(CommandError::Syntax("MAIL FROM:<address> [parameters]"));
        }
        let known = which(
            key,
            &["SIZE", "BODY", "SMTPUTF8", "REQUIRETLS", "RET", "ENVID"],
        );
        match (known, value) {
            (Some(0), Some(v)) if m.size.is_none() => {
                m.size = Some(parse_decimal(v).ok_or_else(bad)?)
            }
            (Some(1), Some(v)) if m.body.is_none() => {
                m.body = Some(match which(v, &["7BIT", "8BITMIME", "BINARYMIME"]) {
                    Some(0) => Body::SevenBit,
                    Some(1) => Body::EightBitMime,
                    Some(2) => Body::BinaryMime,
                    _ => return Err(bad()),
                })
            }
            (Some(2), None) if !m.smtputf8 => m.smtputf8 = true,
            (Some(3), None) if !m.requiretls => m.requiretls = true,
            (Some(4), Some(v)) if m.ret.is_none() => {
                m.ret = Some(match which(v, &["FULL", "HDRS"]) {
                    Some(0) => Ret::Full,
                    Some(1) => Ret::Headers,
                    _ => return Err(bad()),
                })
            }
            (Some(5), Some(v)) if m.envid.is_none() => m.envid = Some(envid(v).ok_or_else(bad)?),
            (Some(_), _) => return Err(bad()),
            (None, _) => return Err(CommandError::UnknownParameter(key.to_owned())),
        }
    }
    Ok(m)
}

fn rcpt_params(list: &str) -> Result<RcptParamsRef<'_>, CommandError> {
    let mut r = RcptParamsRef::default();
    for (key, value) in params(list) {
        let bad = || CommandError::InvalidParameter(key.to_ascii_uppercase());
        if !is_keyword(key) {
            return Err(CommandError::Syntax("RCPT TO:<address> [parameters]"));
        }
        match (which(key, &["NOTIFY", "ORCPT"]), value) {
            (Some(0), Some(v)) if r.notify.is_none() => r.notify = Some(notify(v).ok_or_else(bad)?),
            (Some(1), Some(v)) if r.orcpt.is_none() => r.orcpt = Some(orcpt(v).ok_or_else(bad)?),
            (Some(_), _) => return Err(bad()),
            (None, _) => return Err(CommandError::UnknownParameter(key.to_owned())),
        }
    }
    Ok(r)
}

/// Parameters of MAIL FROM borrowed from the command line: [`MailParams`] without allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MailParamsRef<'a> {
    /// `SIZE=` declared message size (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531 3.4).
    pub smtputf8: bool,
    /// `REQUIRETLS` (RFC 8689 section 4).
    pub requiretls: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` xtext as sent (RFC 3461 4.4).
    pub envid: Option<&'a str>,
}

impl MailParamsRef<'_> {
    /// The owned form.
    pub fn into_owned(self) -> MailParams {
        MailParams {
            size: self.size,
            body: self.body,
            smtputf8: self.smtputf8,
            requiretls: self.requiretls,
            ret: self.ret,
            envid: self.envid.map(str::to_owned),
        }
    }
}

/// Parameters of RCPT TO borrowed from the command line: [`RcptParams`] without allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RcptParamsRef<'a> {
    /// `NOTIFY=` (RFC 3461 4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` as sent (RFC 3461 4.2): (address type, encoded address).
    pub orcpt: Option<(&'a str, &'a str)>,
}

impl RcptParamsRef<'_> {
    /// The owned form.
    pub fn into_owned(self) -> RcptParams {
        RcptParams {
            notify: self.notify,
            orcpt: self.orcpt.map(|(k, a)| (k.to_owned(), a.to_owned())),
        }
    }
}

/// One SMTP command borrowed from its line: [`Command`] without allocation. [`CommandRef::parse`] validates
/// exactly as strictly as [`Command::parse`] (which is this parser plus [`CommandRef::into_owned`]); every
/// string in it is a slice of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommandRef<'a> {
    /// `EHLO domain / address-literal` (RFC 5321 4.1.1.1).
    Ehlo(HostRef<'a>),
    /// `HELO domain`.
    Helo(HostRef<'a>),
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The reverse path.
        from: ReversePathRef<'a>,
        /// ESMTP parameters.
        params: MailParamsRef<'a>,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The forward path.
        to: ForwardPathRef<'a>,
        /// ESMTP parameters.
        params: RcptParamsRef<'a>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030 section 2).
    Bdat {
        /// Octets of chunk content following the command line.
        size: u64,
        /// `LAST` given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(&'a str),
    /// `EXPN string`.
    Expn(&'a str),
    /// `HELP [string]`.
    Help(Option<&'a str>),
    /// `STARTTLS`.
    StartTls,
}

/// Whether every octet is in `0x20..=0x7e` (printable US-ASCII and SP), tested eight at a time (SWAR): for each
/// 64-bit word `x`, `(x - 0x20..20) & !x & 0x80..80` is non-zero exactly when some octet is below 0x20 (the
/// classic "has less than" test, exact for a bound of at most 128), the same on `x ^ 0x7f..7f` against 1 finds
/// DEL, and `x & 0x80..80` finds non-ASCII octets.
fn is_printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut acc = 0u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let del = x ^ (ONES * 0x7f);
        acc |= (x.wrapping_sub(ONES * 0x20) & !x) | (del.wrapping_sub(ONES) & !del) | x;
    }
    let mut tail = 0u8;
    for &c in words.remainder() {
        tail |= u8::from(!(0x20..0x7f).contains(&c));
    }
    acc & HIGH == 0 && tail == 0
}

/// The first four octets of a verb, lower-cased, as one little-endian word.
const fn verb_word(v: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*v)
}

/// `ALPHA` octets differ from their other case only in bit 5: OR-ing 0x20 into each octet maps "EHLO", "ehlo",
/// "EhLo" to the same word, and only those (no non-letter octet becomes a lower-case letter).
const CASE_FOLD: u32 = 0x2020_2020;

const EHLO: u32 = verb_word(b"ehlo");
const HELO: u32 = verb_word(b"helo");
const MAIL: u32 = verb_word(b"mail");
const RCPT: u32 = verb_word(b"rcpt");
const DATA: u32 = verb_word(b"data");
const RSET: u32 = verb_word(b"rset");
const QUIT: u32 = verb_word(b"quit");
const NOOP: u32 = verb_word(b"noop");
const HELP: u32 = verb_word(b"help");
const VRFY: u32 = verb_word(b"vrfy");
const EXPN: u32 = verb_word(b"expn");
const BDAT: u32 = verb_word(b"bdat");
const STAR: u32 = verb_word(b"star");
const TTLS: u32 = verb_word(b"ttls");

impl<'a> CommandRef<'a> {
    /// Parse one command line, CRLF included, without allocating (same rules and errors as
    /// [`Command::parse`]).
    pub fn parse(line: &'a [u8]) -> Result<Self, CommandError> {
        // The common shapes are proved valid in one pass over the octets; anything else, valid or not, is decided
        // (and its error named) by the general parser below.
        match simple::parse(line) {
            Some(command) => Ok(command),
            None => Self::parse_general(line),
        }
    }

    /// The parser for every line: the line check first, then the verb and its arguments. Kept out of line: it
    /// only runs for the uncommon shapes and errors, and inlined it would burden the fast path with its frame.
    #[inline(never)]
    fn parse_general(line: &'a [u8]) -> Result<Self, CommandError> {
        let body = line
            .strip_suffix(b"\r\n")
            .ok_or(CommandError::BareLineEnding)?;
        // The common case, printable ASCII only, is proved eight octets at a time. Anything else takes an exact
        // pass: a CR or LF inside the line (RFC 5321 2.3.8), an ASCII control other than TAB, a non-ASCII octet
        // (then UTF-8 control characters are looked for).
        let text = if is_printable_ascii(body) {
            std::str::from_utf8(body).map_err(|_| CommandError::InvalidCharacters)?
        } else {
            let (mut line_end, mut control, mut high) = (0u8, 0u8, 0u8);
            for &b in body {
                line_end |= u8::from(b == b'\r') | u8::from(b == b'\n');
                control |= u8::from(b < 0x20 && b != b'\t') | u8::from(b == 0x7f);
                high |= b >> 7;
            }
            if line_end != 0 {
                return Err(CommandError::BareLineEnding);
            }
            let text = std::str::from_utf8(body).map_err(|_| CommandError::InvalidCharacters)?;
            if control != 0 || (high != 0 && text.chars().any(|c| !c.is_ascii() && c.is_control()))
            {
                return Err(CommandError::InvalidCharacters);
            }
            text
        };
        // Short lines: a plain loop beats a call into a SIMD search.
        let verb_len = body.iter().position(|&c| c == b' ').unwrap_or(body.len());
        let arg = text.get(verb_len + 1..);
        let no_arg = |cmd: Self, usage| {
            if arg.is_some() {
                Err(CommandError::Syntax(usage))
            } else {
                Ok(cmd)
            }
        };
        let word = |at: usize| {
            u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) | CASE_FOLD
        };
        if verb_len == 8 {
            return if word(0) == STAR && word(4) == TTLS {
                no_arg(Self::StartTls, "STARTTLS")
            } else {
                Err(CommandError::Unrecognized)
            };
        }
        if verb_len != 4 {
            return Err(CommandError::Unrecognized);
        }
        match word(0) {
            w @ (EHLO | HELO) => {
                let usage = if w == EHLO {
                    "EHLO hostname"
                } else {
                    "HELO hostname"
                };
                let name = arg
                    .map(|a| a.trim_matches(' '))
                    .filter(|a| !a.is_empty())
                    .ok_or(CommandError::Syntax(usage))?;
                let host = HostRef::parse(name).map_err(|_| CommandError::Syntax(usage))?;
                Ok(if w == EHLO {
                    Self::Ehlo(host)
                } else {
                    Self::Helo(host)
                })
            }
            MAIL => {
                const USAGE: &str = "MAIL FROM:<address>";
                let (path, list) = arg
                    .and_then(|a| split_path(a, "FROM:"))
                    .ok_or(CommandError::Syntax(USAGE))?;
                let from = ReversePathRef::parse(path).map_err(CommandError::BadSender)?;
                Ok(Self::Mail {
                    from,
                    params: mail_params(list)?,
                })
            }
            RCPT => {
                const USAGE: &str = "RCPT TO:<address>";
                let (path, list) = arg
                    .and_then(|a| split_path(a, "TO:"))
                    .ok_or(CommandError::Syntax(USAGE))?;
                let to = ForwardPathRef::parse(path).map_err(CommandError::BadRecipient)?;
                Ok(Self::Rcpt {
                    to,
                    params: rcpt_params(list)?,
                })
            }
            DATA => no_arg(Self::Data, "DATA"),
            RSET => no_arg(Self::Rset, "RSET"),
            QUIT => no_arg(Self::Quit, "QUIT"),
            NOOP => Ok(Self::Noop),
            HELP => Ok(Self::Help(arg)),
            w @ (VRFY | EXPN) => {
                let usage = if w == VRFY {
                    "VRFY address"
                } else {
                    "EXPN mailing-list"
                };
                let a = arg
                    .filter(|a| !a.trim().is_empty())
                    .ok_or(CommandError::Syntax(usage))?;
                Ok(if w == VRFY {
                    Self::Vrfy(a)
                } else {
                    Self::Expn(a)
                })
            }
            BDAT => {
                // RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF
                const USAGE: &str = "BDAT count [LAST]";
                let mut parts = arg.ok_or(CommandError::Syntax(USAGE))?.split(' ');
                let size = parts
                    .next()
                    .and_then(parse_decimal)
                    .ok_or(CommandError::Syntax(USAGE))?;
                let last = match parts.next() {
                    None => false,
                    Some(m) if m.eq_ignore_ascii_case("LAST") => true,
                    Some(_) => return Err(CommandError::Syntax(USAGE)),
                };
                if parts.next().is_some() {
                    return Err(CommandError::Syntax(USAGE));
                }
                Ok(Self::Bdat { size, last })
            }
            _ => Err(CommandError::Unrecognized),
        }
    }

    /// The owned form.
    pub fn into_owned(self) -> Command {
        match self {
            Self::Ehlo(h) => Command::Ehlo(h.into_owned()),
            Self::Helo(h) => Command::Helo(h.into_owned()),
            Self::Mail { from, params } => Command::Mail {
                from: from.into_owned(),
                params: params.into_owned(),
            },
            Self::Rcpt { to, params } => Command::Rcpt {
                to: to.into_owned(),
                params: params.into_owned(),
            },
            Self::Data => Command::Data,
            Self::Bdat { size, last } => Command::Bdat { size, last },
            Self::Rset => Command::Rset,
            Self::Noop => Command::Noop,
            Self::Quit => Command::Quit,
            Self::Vrfy(a) => Command::Vrfy(a.to_owned()),
            Self::Expn(a) => Command::Expn(a.to_owned()),
            Self::Help(a) => Command::Help(a.map(str::to_owned)),
            Self::StartTls => Command::StartTls,
        }
    }
}

impl From<CommandRef<'_>> for Command {
    fn from(c: CommandRef<'_>) -> Self {
        c.into_owned()
    }
}

impl Command {
    /// Parse one command line. `line` must end with CRLF and hold no other CR or LF: a bare CR or LF is an
    /// error for the whole line, never a separator (RFC 5321 2.3.8, 4.1.1).
    pub fn parse(line: &[u8]) -> Result<Self, CommandError> {
        CommandRef::parse(line).map(CommandRef::into_owned)
    }

    /// Whether this command ends a pipelined group (RFC 2920 3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT, NOOP;
    /// RFC 3207 4: STARTTLS; HELO by the same logic as EHLO). The client must wait for its reply before sending
    /// more; the server treats anything received before that reply as a synchronization error. BDAT, LAST or
    /// not, does not end a group: RFC 3030 4.2 lets BDAT commands and their chunks be pipelined, and the
    /// chunk octets follow the command line without waiting for any reply.
    pub fn ends_group(&self) -> bool {
        matches!(
            self,
            Self::Ehlo(_)
                | Self::Helo(_)
                | Self::Data
                | Self::Vrfy(_)
                | Self::Expn(_)
                | Self::Quit
                | Self::Noop
                | Self::StartTls
        )
    }

    /// Append the wire form, CRLF included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = match self {
            Self::Ehlo(h) => write!(s, "EHLO {h}"),
            Self::Helo(h) => write!(s, "HELO {h}"),
            Self::Mail { from, params } => {
                let _ = write!(s, "MAIL FROM:{from}");
                if let Some(size) = params.size {
                    let _ = write!(s, " SIZE={size}");
                }
                match params.body {
                    Some(Body::SevenBit) => s.push_str(" BODY=7BIT"),
                    Some(Body::EightBitMime) => s.push_str(" BODY=8BITMIME"),
                    Some(Body::BinaryMime) => s.push_str(" BODY=BINARYMIME"),
                    None => {}
                }
                if params.smtputf8 {
                    s.push_str(" SMTPUTF8");
                }
                if params.requiretls {
                    s.push_str(" REQUIRETLS");
                }
                match params.ret {
                    Some(Ret::Full) => s.push_str(" RET=FULL"),
                    Some(Ret::Headers) => s.push_str(" RET=HDRS"),
                    None => {}
                }
                if let Some(e) = &params.envid {
                    let _ = write!(s, " ENVID={e}");
                }
                Ok(())
            }
            Self::Rcpt { to, params } => {
                let _ = write!(s, "RCPT TO:{to}");
                match params.notify {
                    Some(Notify::Never) => s.push_str(" NOTIFY=NEVER"),
                    Some(Notify::On {
                        success,
                        failure,
                        delay,
                    }) => {
                        let items: Vec<&str> =
                            [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                                .into_iter()
                                .filter_map(|(on, n)| on.then_some(n))
                                .collect();
                        let _ = write!(s, " NOTIFY={}", items.join(","));
                    }
                    None => {}
                }
                if let Some((kind, addr)) = &params.orcpt {
                    let _ = write!(s, " ORCPT={kind};{addr}");
                }
                Ok(())
            }
            Self::Data => write!(s, "DATA"),
            Self::Bdat { size, last } => {
                write!(s, "BDAT {size}{}", if *last { " LAST" } else { "" })
            }
            Self::Rset => write!(s, "RSET"),
            Self::Noop => write!(s, "NOOP"),
            Self::Quit => write!(s, "QUIT"),
            Self::Vrfy(a) => write!(s, "VRFY {a}"),
            Self::Expn(a) => write!(s, "EXPN {a}"),
            Self::Help(None) => write!(s, "HELP"),
            Self::Help(Some(a)) => write!(s, "HELP {a}"),
            Self::StartTls => write!(s, "STARTTLS"),
        };
        // Defence in depth: arguments of parsed commands cannot hold CR or LF; strip any from built ones.
        out.extend(s.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
        out.extend_from_slice(b"\r\n");
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser as it was before the borrowed rewrite: the reference the proptests compare against.
    mod legacy_parser {
        use crate::address::legacy;
        use crate::command::*;

        /// Split `FROM:<path> params` into the path and the parameter list, tolerating spaces after the colon (many
        /// clients send `MAIL FROM: <a@b>`).
        fn split_path<'a>(arg: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
            let head = arg.get(..prefix.len())?;
            if !head.eq_ignore_ascii_case(prefix) {
                return None;
            }
            let rest = arg[prefix.len()..].trim_start_matches(' ');
            if !rest.starts_with('<') {
                return None;
            }
            // The path ends at the first '>' outside a quoted string.
            let mut quoted = false;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                if escaped {
                    escaped = false;
                } else if quoted && c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quoted = !quoted;
                } else if c == '>' && !quoted {
                    let (path, params) = rest.split_at(i + 1);
                    if !params.is_empty() && !params.starts_with(' ') {
                        return None;
                    }
                    return Some((path, params.trim_start_matches(' ')));
                }
            }
            None
        }

        fn params(list: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
            list.split(' ')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (p, None),
                })
        }

        fn mail_params(list: &str) -> Result<MailParams, CommandError> {
            let mut m = MailParams::default();
            for (key, value) in params(list) {
                let bad = || CommandError::InvalidParameter(key.to_ascii_uppercase());
                if !is_keyword(key) {
                    return Err(CommandError::Syntax("MAIL FROM:<address> [parameters]"));
                }
                match (key.to_ascii_uppercase().as_str(), value) {
                    ("SIZE", Some(v)) if m.size.is_none() => {
                        m.size = Some(parse_decimal(v).ok_or_else(bad)?)
                    }
                    ("BODY", Some(v)) if m.body.is_none() => {
                        m.body = Some(match v.to_ascii_uppercase().as_str() {
                            "7BIT" => Body::SevenBit,
                            "8BITMIME" => Body::EightBitMime,
                            "BINARYMIME" => Body::BinaryMime,
                            _ => return Err(bad()),
                        })
                    }
                    ("SMTPUTF8", None) if !m.smtputf8 => m.smtputf8 = true,
                    ("REQUIRETLS", None) if !m.requiretls => m.requiretls = true,
                    ("RET", Some(v)) if m.ret.is_none() => {
                        m.ret = Some(match v.to_ascii_uppercase().as_str() {
                            "FULL" => Ret::Full,
                            "HDRS" => Ret::Headers,
                            _ => return Err(bad()),
                        })
                    }
                    // RFC 3461 4.4: ENVID is xtext of at most 100 characters.
                    ("ENVID", Some(v)) if m.envid.is_none() => {
                        if v.is_empty() || v.len() > 100 || !is_xtext(v) {
                            return Err(bad());
                        }
                        m.envid = Some(v.to_owned());
                    }
                    ("SIZE" | "BODY" | "SMTPUTF8" | "REQUIRETLS" | "RET" | "ENVID", _) => {
                        return Err(bad());
                    }
                    _ => return Err(CommandError::UnknownParameter(key.to_owned())),
                }
            }
            Ok(m)
        }

        fn rcpt_params(list: &str) -> Result<RcptParams, CommandError> {
            let mut r = RcptParams::default();
            for (key, value) in params(list) {
                let bad = || CommandError::InvalidParameter(key.to_ascii_uppercase());
                if !is_keyword(key) {
                    return Err(CommandError::Syntax("RCPT TO:<address> [parameters]"));
                }
                match (key.to_ascii_uppercase().as_str(), value) {
                    ("NOTIFY", Some(v)) if r.notify.is_none() => {
                        if v.eq_ignore_ascii_case("NEVER") {
                            r.notify = Some(Notify::Never);
                        } else {
                            let (mut success, mut failure, mut delay) = (false, false, false);
                            for item in v.split(',') {
                                let flag = match item.to_ascii_uppercase().as_str() {
                                    "SUCCESS" => &mut success,
                                    "FAILURE" => &mut failure,
                                    "DELAY" => &mut delay,
                                    _ => return Err(bad()),
                                };
                                if *flag {
                                    return Err(bad());
                                }
                                *flag = true;
                            }
                            r.notify = Some(Notify::On {
                                success,
                                failure,
                                delay,
                            });
                        }
                    }
                    // RFC 3461 4.2: ORCPT=addr-type ";" xtext, at most 500 characters.
                    ("ORCPT", Some(v)) if r.orcpt.is_none() => {
                        let (kind, addr) = v.split_once(';').ok_or_else(bad)?;
                        if !is_keyword(kind) || addr.is_empty() || v.len() > 500 || !is_xtext(addr)
                        {
                            return Err(bad());
                        }
                        r.orcpt = Some((kind.to_owned(), addr.to_owned()));
                    }
                    ("NOTIFY" | "ORCPT", _) => return Err(bad()),
                    _ => return Err(CommandError::UnknownParameter(key.to_owned())),
                }
            }
            Ok(r)
        }

        pub(super) fn parse(line: &[u8]) -> Result<Command, CommandError> {
            let body = line
                .strip_suffix(b"\r\n")
                .ok_or(CommandError::BareLineEnding)?;
            if memchr::memchr2(b'\r', b'\n', body).is_some() {
                return Err(CommandError::BareLineEnding);
            }
            let text = std::str::from_utf8(body).map_err(|_| CommandError::InvalidCharacters)?;
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(CommandError::InvalidCharacters);
            }
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v, Some(a)),
                None => (text, None),
            };
            let no_arg = |cmd: Command, usage| {
                if arg.is_some() {
                    Err(CommandError::Syntax(usage))
                } else {
                    Ok(cmd)
                }
            };
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" | "HELO" => {
                    let usage = if verb.eq_ignore_ascii_case("EHLO") {
                        "EHLO hostname"
                    } else {
                        "HELO hostname"
                    };
                    let name = arg
                        .map(|a| a.trim_matches(' '))
                        .filter(|a| !a.is_empty())
                        .ok_or(CommandError::Syntax(usage))?;
                    let host = legacy::host(name).map_err(|_| CommandError::Syntax(usage))?;
                    Ok(if usage.starts_with('E') {
                        Command::Ehlo(host)
                    } else {
                        Command::Helo(host)
                    })
                }
                "MAIL" => {
                    const USAGE: &str = "MAIL FROM:<address>";
                    let (path, list) = arg
                        .and_then(|a| split_path(a, "FROM:"))
                        .ok_or(CommandError::Syntax(USAGE))?;
                    let from = legacy::reverse_path(path).map_err(CommandError::BadSender)?;
                    Ok(Command::Mail {
                        from,
                        params: mail_params(list)?,
                    })
                }
                "RCPT" => {
                    const USAGE: &str = "RCPT TO:<address>";
                    let (path, list) = arg
                        .and_then(|a| split_path(a, "TO:"))
                        .ok_or(CommandError::Syntax(USAGE))?;
                    let to = legacy::forward_path(path).map_err(CommandError::BadRecipient)?;
                    Ok(Command::Rcpt {
                        to,
                        params: rcpt_params(list)?,
                    })
                }
                "DATA" => no_arg(Command::Data, "DATA"),
                "RSET" => no_arg(Command::Rset, "RSET"),
                "QUIT" => no_arg(Command::Quit, "QUIT"),
                "STARTTLS" => no_arg(Command::StartTls, "STARTTLS"),
                "NOOP" => Ok(Command::Noop),
                "HELP" => Ok(Command::Help(arg.map(str::to_owned))),
                "VRFY" | "EXPN" => {
                    let usage = if verb.eq_ignore_ascii_case("VRFY") {
                        "VRFY address"
                    } else {
                        "EXPN mailing-list"
                    };
                    let a = arg
                        .filter(|a| !a.trim().is_empty())
                        .ok_or(CommandError::Syntax(usage))?
                        .to_owned();
                    Ok(if usage.starts_with('V') {
                        Command::Vrfy(a)
                    } else {
                        Command::Expn(a)
                    })
                }
                "BDAT" => {
                    // RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF
                    const USAGE: &str = "BDAT count [LAST]";
                    let mut parts = arg.ok_or(CommandError::Syntax(USAGE))?.split(' ');
                    let size = parts
                        .next()
                        .and_then(parse_decimal)
                        .ok_or(CommandError::Syntax(USAGE))?;
                    let last = match parts.next() {
                        None => false,
                        Some(m) if m.eq_ignore_ascii_case("LAST") => true,
                        Some(_) => return Err(CommandError::Syntax(USAGE)),
                    };
                    if parts.next().is_some() {
                        return Err(CommandError::Syntax(USAGE));
                    }
                    Ok(Command::Bdat { size, last })
                }
                _ => Err(CommandError::Unrecognized),
            }
        }
    }

    fn p(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn basic_commands() {
        assert!(matches!(p("EHLO bar.com\r\n"), Ok(Command::Ehlo(_))));
        assert!(matches!(p("helo [192.0.2.1]\r\n"), Ok(Command::Helo(_))));
        assert_eq!(p("DATA\r\n"), Ok(Command::Data));
        assert_eq!(p("quit\r\n"), Ok(Command::Quit));
        assert_eq!(p("NOOP anything\r\n"), Ok(Command::Noop));
        assert_eq!(p("STARTTLS\r\n"), Ok(Command::StartTls));
        assert_eq!(p("STARTTLS foo\r\n"), Err(CommandError::Syntax("STARTTLS")));
        assert_eq!(
            p("BDAT 1000 LAST\r\n"),
            Ok(Command::Bdat {
                size: 1000,
                last: true
            })
        );
        assert_eq!(
            p("BDAT x\r\n"),
            Err(CommandError::Syntax("BDAT count [LAST]"))
        );
        assert_eq!(p("FOO\r\n"), Err(CommandError::Unrecognized));
        assert_eq!(p("EHLO\r\n"), Err(CommandError::Syntax("EHLO hostname")));
    }

    #[test]
    fn bare_line_endings_are_errors() {
        assert_eq!(
            p("MAIL FROM:<a@b>\rRCPT TO:<c@d>\r\n"),
            Err(CommandError::BareLineEnding)
        );
        assert_eq!(
            p("MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n"),
            Err(CommandError::BareLineEnding)
        );
        assert_eq!(p("NOOP\n"), Err(CommandError::BareLineEnding));
        assert_eq!(p("NOOP\0\r\n"), Err(CommandError::InvalidCharacters));
    }

    #[test]
    fn mail_params() {
        let c = p("MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8 REQUIRETLS RET=HDRS ENVID=QQ314159\r\n").unwrap();
        let Command::Mail { from, params } = c else {
            panic!("not MAIL")
        };
        assert_eq!(from.to_string(), "<a@b.c>");
        assert_eq!(params.size, Some(1000));
        assert_eq!(params.body, Some(Body::EightBitMime));
        assert!(params.smtputf8 && params.requiretls);
        assert_eq!(params.ret, Some(Ret::Headers));
        assert_eq!(params.envid.as_deref(), Some("QQ314159"));
        assert!(matches!(
            p("MAIL FROM: <>\r\n"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                ..
            })
        ));
        assert_eq!(
            p("MAIL FROM:<a@b> XFOO=1\r\n"),
            Err(CommandError::UnknownParameter("XFOO".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=x\r\n"),
            Err(CommandError::InvalidParameter("SIZE".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=1 SIZE=2\r\n"),
            Err(CommandError::InvalidParameter("SIZE".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> BODY=9BIT\r\n"),
            Err(CommandError::InvalidParameter("BODY".into()))
        );
        assert!(matches!(
            p("MAIL FROM:a@b\r\n"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@>\r\n"),
            Err(CommandError::BadSender(_))
        ));
        assert_eq!(
            CommandError::UnknownParameter("X".into())
                .reply()
                .to_bytes(),
            b"555 5.5.4 Unsupported option: X\r\n"
        );
    }

    #[test]
    fn rcpt_params() {
        let c =
            p("RCPT TO:<Jones@XYZ.COM> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Jones+40XYZ.COM\r\n")
                .unwrap();
        let Command::Rcpt { params, .. } = &c else {
            panic!("not RCPT")
        };
        assert_eq!(
            params.notify,
            Some(Notify::On {
                success: true,
                failure: true,
                delay: false
            })
        );
        assert_eq!(
            params.orcpt,
            Some(("rfc822".into(), "Jones+40XYZ.COM".into()))
        );
        assert_eq!(Command::parse(&c.to_bytes()), Ok(c.clone()));
        assert_eq!(
            p("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS\r\n"),
            Err(CommandError::InvalidParameter("NOTIFY".into()))
        );
        assert_eq!(
            p("RCPT TO:<a@b> ORCPT=rfc822;a=b\r\n"),
            Err(CommandError::InvalidParameter("ORCPT".into()))
        );
        assert!(matches!(
            p("RCPT TO:<Postmaster>\r\n"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                ..
            })
        ));
    }

    /// RFC 3461 4: xtext encoding.
    fn xtext(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
                    (b as char).to_string()
                } else {
                    format!("+{b:02X}")
                }
            })
            .collect()
    }

    proptest::proptest! {
        /// parse(encode(c)) == c for generated MAIL and RCPT commands.
        #[test]
        fn mail_rcpt_round_trip(
            local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,2}",
            domain in "[a-z0-9]{1,10}(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){1,3}",
            size in proptest::option::of(0u64..u64::MAX),
            smtputf8: bool,
            requiretls: bool,
            envid in proptest::option::of("[A-Za-z0-9]{1,20}"),
            notify in 0u8..9,
        ) {
            let from = ReversePath::parse(&format!("<{local}@{domain}>")).unwrap();
            let params = MailParams { size, body: Some(Body::EightBitMime), smtputf8, requiretls, ret: Some(Ret::Full), envid };
            let mail = Command::Mail { from, params };
            proptest::prop_assert_eq!(Command::parse(&mail.to_bytes()), Ok(mail));
            let to = ForwardPath::parse(&format!("<{local}@{domain}>")).unwrap();
            let notify = match notify {
                0 => None,
                8 => Some(Notify::Never),
                n => Some(Notify::On { success: n & 1 != 0, failure: n & 2 != 0, delay: n & 4 != 0 }),
            };
            let notify = notify.filter(|n| *n != Notify::On { success: false, failure: false, delay: false });
            let orcpt = Some(("rfc822".to_owned(), xtext(&format!("{local}@{domain}"))));
            let rcpt = Command::Rcpt { to, params: RcptParams { notify, orcpt } };
            proptest::prop_assert_eq!(Command::parse(&rcpt.to_bytes()), Ok(rcpt));
        }
    }

    #[test]
    fn encode_round_trip() {
        for line in [
            "EHLO client.example\r\n",
            "MAIL FROM:<a@b.example> SIZE=10 BODY=BINARYMIME SMTPUTF8 REQUIRETLS RET=FULL ENVID=x+2B\r\n",
            "RCPT TO:<Postmaster> NOTIFY=NEVER\r\n",
            "BDAT 0 LAST\r\n",
            "VRFY Smith\r\n",
            "HELP\r\n",
        ] {
            let c = p(line).unwrap();
            assert_eq!(c.to_bytes(), line.as_bytes(), "{line}");
        }
    }

    /// Command lines built from the tokens that matter to the grammar, with the odd hostile octet.
    fn command_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let verb = prop_oneof![
            Just("EHLO "),
            Just("helo "),
            Just("MAIL FROM:"),
            Just("mail from: "),
            Just("RCPT TO:"),
            Just("rcpt to:"),
            Just("DATA"),
            Just("RSET"),
            Just("QUIT"),
            Just("NOOP"),
            Just("HELP"),
            Just("VRFY "),
            Just("EXPN "),
            Just("BDAT "),
            Just("STARTTLS"),
            Just("StartTls "),
            Just("EHLO"),
            Just("MAIL"),
            Just("XYZW "),
            Just("EHL0 "),
            Just("E\u{e9}LO "),
        ];
        let piece = prop_oneof![
            Just("<"),
            Just(">"),
            Just("<>"),
            Just("a"),
            Just("@"),
            Just("."),
            Just("example.org"),
            Just("\""),
            Just("\\"),
            Just(" "),
            Just("  "),
            Just("SIZE=1000"),
            Just("size=x"),
            Just("BODY=8bitmime"),
            Just("BODY=7BIT"),
            Just("SMTPUTF8"),
            Just("REQUIRETLS"),
            Just("RET=hdrs"),
            Just("ENVID=ab+2C"),
            Just("NOTIFY=success,DELAY"),
            Just("NOTIFY=NEVER"),
            Just("ORCPT=rfc822;a+40b"),
            Just("X-FOO=1"),
            Just("="),
            Just(";"),
            Just(","),
            Just("LAST"),
            Just("123"),
            Just("[192.0.2.1]"),
            Just("[IPv6:::1]"),
            Just("postmaster"),
            Just("é"),
            Just("\u{85}"),
            Just("\t"),
            Just("\0"),
            Just("\r"),
            Just("\n"),
            Just("\x7f"),
            Just("-"),
            Just(":"),
            Just("@a,@b:"),
        ];
        (
            verb,
            proptest::collection::vec(piece, 0..10),
            0u8..10,
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(verb, pieces, end, junk)| {
                let mut line = verb.as_bytes().to_vec();
                line.extend_from_slice(pieces.concat().as_bytes());
                match end {
                    0 => line.extend_from_slice(b"\n"),
                    1 => line.extend_from_slice(&junk),
                    2 => {
                        line.extend_from_slice(&junk);
                        line.extend_from_slice(b"\r\n");
                    }
                    _ => line.extend_from_slice(b"\r\n"),
                }
                line
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// The borrowed parser, the owned parser and the parser as it was before the rewrite agree on every line.
        #[test]
        fn borrowed_owned_and_reference_agree(line in command_line()) {
            let reference = legacy_parser::parse(&line);
            let borrowed = CommandRef::parse(&line);
            proptest::prop_assert_eq!(borrowed.map(CommandRef::into_owned), reference.clone());
            proptest::prop_assert_eq!(Command::parse(&line), reference);
        }

        /// Same on arbitrary octets.
        #[test]
        fn agree_on_arbitrary_octets(mut line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), crlf: bool) {
            if crlf {
                line.extend_from_slice(b"\r\n");
            }
            proptest::prop_assert_eq!(Command::parse(&line), legacy_parser::parse(&line));
        }
    }

    /// Lines of the shapes the fast path takes (and a few it must leave to the general parser).
    const SIMPLE: &[&str] = &[
        "EHLO client.example.org\r\n",
        "helo mx-1.example.net\r\n",
        "MAIL FROM:<alice.sender@example.org> SIZE=48213 BODY=8BITMIME\r\n",
        "mail from: <a@b.c> size=0 body=7bit SMTPUTF8 requiretls ret=hdrs envid=QQ+2B314\r\n",
        "MAIL FROM:<> SIZE=1024\r\n",
        "MAIL FROM:<x_y-z!#$%&'*+/=?^`{|}~@a-b.c_d.example> BODY=BINARYMIME RET=FULL\r\n",
        "RCPT TO:<bob@example.net>\r\n",
        "RCPT TO:<carol.recipient@mail.example.net>  \r\n",
        "rcpt to:<PostMaster>\r\n",
        "RCPT TO:<dave+tag@example.com> NOTIFY=SUCCESS,failure,DELAY ORCPT=rfc822;dave+2Btag@example.com\r\n",
        "RCPT TO:<e@example.com> NOTIFY=never\r\n",
        "DATA\r\n",
        "rset\r\n",
        "NOOP\r\n",
        "QUIT\r\n",
        "HELP\r\n",
        "StartTLS\r\n",
        "BDAT 1000\r\n",
        "bdat 0 last\r\n",
    ];

    /// [`SIMPLE`] plus lines at the limits the fast path enforces, so that one edit crosses them.
    fn simple_lines() -> Vec<String> {
        let label = |c: &str| c.repeat(63);
        let mut lines: Vec<String> = SIMPLE.iter().map(|l| l.to_string()).collect();
        lines.extend([
            // RFC 1870 size of 20 digits, the largest u64.
            "MAIL FROM:<a@b.c> SIZE=18446744073709551615\r\n".to_owned(),
            "MAIL FROM:<a@b.c> SIZE=00000000000000000001\r\n".to_owned(),
            "BDAT 00000000000000000001 LAST\r\n".to_owned(),
            // Local part of 64 octets, label of 63, domain of 255, path of 256 (RFC 5321 4.5.3.1).
            format!("MAIL FROM:<{}@{}.example>\r\n", "a".repeat(64), label("b")),
            format!(
                "EHLO {}.{}.{}.{}\r\n",
                label("a"),
                label("b"),
                label("c"),
                label("d")
            ),
            format!(
                "RCPT TO:<{}@{}.{}.{}>\r\n",
                "a".repeat(64),
                label("b"),
                label("c"),
                "d".repeat(61)
            ),
            // ENVID of 100 characters, ORCPT of 500 (RFC 3461 4.4, 4.2).
            format!("MAIL FROM:<> ENVID={}\r\n", "e".repeat(100)),
            format!("RCPT TO:<a@b.c> ORCPT=rfc822;{}\r\n", "x".repeat(493)),
        ]);
        lines
    }

    #[test]
    fn common_lines_take_the_fast_path() {
        for line in &simple_lines() {
            let fast = simple::parse(line.as_bytes());
            assert!(fast.is_some(), "{line}");
            assert_eq!(
                fast.ok_or(()),
                CommandRef::parse_general(line.as_bytes()).map_err(drop),
                "{line}"
            );
        }
        // Valid, but left to the general parser.
        for line in [
            "EHLO [192.0.2.1]\r\n",
            "EHLO  client.example.org \r\n",
            "MAIL FROM:<\"a b\"@example.org>\r\n",
            "MAIL FROM:<@relay.example:a@example.org>\r\n",
            "MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n",
            "RCPT TO:<a@[IPv6:::1]>\r\n",
            "NOOP hello\r\n",
            "HELP MAIL\r\n",
            "VRFY Smith\r\n",
        ] {
            assert_eq!(simple::parse(line.as_bytes()), None, "{line}");
            assert!(CommandRef::parse(line.as_bytes()).is_ok(), "{line}");
        }
    }

    /// Every line one edit away from a fast-path line (each octet replaced by, or preceded by, each of the 256
    /// octets; each octet removed): wherever the fast path answers, it answers what the general parser answers,
    /// and the whole parser agrees with the reference.
    #[test]
    fn fast_path_agrees_on_every_single_edit() {
        let mut fast = 0;
        for line in simple_lines().iter().map(|l| l.as_bytes()) {
            let mut check = |edited: &[u8]| {
                if let Some(c) = simple::parse(edited) {
                    fast += 1;
                    assert_eq!(Ok(c), CommandRef::parse_general(edited), "{edited:?}");
                }
                assert_eq!(
                    Command::parse(edited),
                    legacy_parser::parse(edited),
                    "{edited:?}"
                );
            };
            for i in 0..=line.len() {
                for octet in 0..=255u8 {
                    let mut edited = line.to_vec();
                    edited.insert(i, octet);
                    check(&edited);
                    if i < line.len() {
                        edited.remove(i + 1);
                        check(&edited);
                    }
                }
                if i < line.len() {
                    let mut edited = line.to_vec();
                    edited.remove(i);
                    check(&edited);
                }
            }
        }
        // Not vacuous: many edited lines (a letter for a letter, a digit for a digit...) stay on the fast path.
        assert!(fast > 10_000, "{fast}");
    }

    /// Two or three octets of a fast-path line replaced, inserted or removed.
    fn mutated_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let octet = prop_oneof![
            any::<u8>(),
            proptest::sample::select(b" <>@.:=,;+-_\"\\\r\n\t\x00\x18\x7f\xc3aZ09".to_vec()),
        ];
        (
            proptest::sample::select(simple_lines()),
            proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..3, octet), 2..4),
        )
            .prop_map(|(line, edits)| {
                let mut line = line.into_bytes();
                for (at, edit, octet) in edits {
                    let i = at.index(line.len() + 1);
                    match edit {
                        0 if i < line.len() => line[i] = octet,
                        1 if i < line.len() => {
                            line.remove(i);
                        }
                        _ => line.insert(i, octet),
                    }
                }
                line
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Whenever the fast path answers, it answers what the general parser answers; and the whole parser still
        /// agrees with the reference on the edges of the fast path's shapes.
        #[test]
        fn fast_path_agrees_with_general_parser(line in mutated_line()) {
            if let Some(fast) = simple::parse(&line) {
                proptest::prop_assert_eq!(Ok(fast), CommandRef::parse_general(&line));
            }
            proptest::prop_assert_eq!(Command::parse(&line), legacy_parser::parse(&line));
        }

        /// The same on the grammar-token lines.
        #[test]
        fn fast_path_agrees_on_token_lines(line in command_line()) {
            if let Some(fast) = simple::parse(&line) {
                proptest::prop_assert_eq!(Ok(fast), CommandRef::parse_general(&line));
            }
        }
    }
}
