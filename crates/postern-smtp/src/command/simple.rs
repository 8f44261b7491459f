//! The fast path of [`CommandRef::parse`]: the shapes of nearly every real command line (a verb alone, `EHLO`
//! with an ASCII domain, `MAIL` / `RCPT` with a plain ASCII path and known parameters, `BDAT`), proved valid in
//! one pass over the octets with one class-table lookup or one word compare per octet, and no separate line
//! check: every octet of the line is matched by some grammar rule, and no rule here admits a control character,
//! a CR, an LF or a non-ASCII octet.
//!
//! [`parse`] returns `Some` only for a line the general parser accepts, and then the same command. `None` means
//! "not one of these shapes" (a quoted local part, an address literal, UTF-8, a source route, `VRFY`, a
//! repeated parameter, any error...): the general parser then decides, and names the error.

use super::{
    BDAT, Body, CASE_FOLD, CommandRef, DATA, EHLO, HELO, HELP, MAIL, MailParamsRef, NOOP, QUIT,
    RCPT, RSET, RcptParamsRef, Ret, STAR, TTLS, envid, notify, orcpt, verb_word,
};
use crate::address::{self, ForwardPathRef, ReversePathRef, SimplePath};
use crate::class::{self, KEYCHAR, Word};

const FROM: u32 = verb_word(b"from");
const TO: u16 = u16::from_le_bytes(*b"to");
const LAST: u32 = verb_word(b"last");
const POSTMASTER: Word = Word::new(b"postmaster");
const SIZE: Word = Word::new(b"SIZE");
const BODY: Word = Word::new(b"BODY");
const SMTPUTF8: Word = Word::new(b"SMTPUTF8");
const REQUIRETLS: Word = Word::new(b"REQUIRETLS");
const RET: Word = Word::new(b"RET");
const ENVID: Word = Word::new(b"ENVID");
const NOTIFY: Word = Word::new(b"NOTIFY");
const ORCPT: Word = Word::new(b"ORCPT");
const SEVEN_BIT: Word = Word::new(b"7BIT");
const EIGHT_BIT_MIME: Word = Word::new(b"8BITMIME");
const BINARY_MIME: Word = Word::new(b"BINARYMIME");
const FULL: Word = Word::new(b"FULL");
const HDRS: Word = Word::new(b"HDRS");

/// The first four octets as a little-endian word, letters folded to lower case (see [`CASE_FOLD`]).
#[inline(always)]
fn word(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_le_bytes([a, b, c, d]) | CASE_FOLD
}

/// See the module documentation.
#[inline(always)]
pub(super) fn parse(line: &[u8]) -> Option<CommandRef<'_>> {
    let body = line.strip_suffix(b"\r\n")?;
    let &[a, b, c, d, ref rest @ ..] = body else {
        return None;
    };
    let verb = word(a, b, c, d);
    let &[b' ', ref arg @ ..] = rest else {
        return match (verb, rest) {
            (DATA, []) => Some(CommandRef::Data),
            (RSET, []) => Some(CommandRef::Rset),
            (QUIT, []) => Some(CommandRef::Quit),
            (NOOP, []) => Some(CommandRef::Noop),
            (HELP, []) => Some(CommandRef::Help(None)),
            (STAR, &[e, f, g, h]) if word(e, f, g, h) == TTLS => Some(CommandRef::StartTls),
            _ => None,
        };
    };
    match verb {
        MAIL => mail(arg),
        RCPT => rcpt(arg),
        EHLO => address::scan_simple_domain(arg).map(CommandRef::Ehlo),
        HELO => address::scan_simple_domain(arg).map(CommandRef::Helo),
        BDAT => bdat(arg),
        _ => None,
    }
}

/// `"FROM:" *SP Reverse-path [SP Mail-parameters]` (RFC 5321 4.1.1.2; spaces after the colon tolerated like the
/// general parser does).
#[inline(always)]
fn mail(arg: &[u8]) -> Option<CommandRef<'_>> {
    let &[f, r, o, m, b':', ref rest @ ..] = arg else {
        return None;
    };
    if word(f, r, o, m) != FROM {
        return None;
    }
    let (path, list) = address::scan_simple_path(trim_start(rest))?;
    let from = match path {
        SimplePath::Atom([]) => ReversePathRef::Null,
        SimplePath::Mailbox(m) => ReversePathRef::Mailbox(m),
        SimplePath::Atom(_) => return None,
    };
    Some(CommandRef::Mail {
        from,
        params: mail_params(list)?,
    })
}

/// `"TO:" *SP ( "<Postmaster>" / Forward-path ) [SP Rcpt-parameters]` (RFC 5321 4.1.1.3).
#[inline(always)]
fn rcpt(arg: &[u8]) -> Option<CommandRef<'_>> {
    let &[t, o, b':', ref rest @ ..] = arg else {
        return None;
    };
    if u16::from_le_bytes([t, o]) | 0x2020 != TO {
        return None;
    }
    let (path, list) = address::scan_simple_path(trim_start(rest))?;
    let to = match path {
        SimplePath::Atom(a) if POSTMASTER.matches(a) => ForwardPathRef::Postmaster,
        SimplePath::Mailbox(m) => ForwardPathRef::Mailbox(m),
        SimplePath::Atom(_) => return None,
    };
    Some(CommandRef::Rcpt {
        to,
        params: rcpt_params(list)?,
    })
}

/// RFC 3030 2: `"BDAT" SP chunk-size [ SP end-marker ]`.
fn bdat(arg: &[u8]) -> Option<CommandRef<'_>> {
    let digits = arg.iter().position(|&c| c == b' ').unwrap_or(arg.len());
    let (size, marker) = arg.split_at(digits);
    let last = match *marker {
        [] => false,
        [b' ', l, a, s, t] if word(l, a, s, t) == LAST => true,
        _ => return None,
    };
    Some(CommandRef::Bdat {
        size: decimal(size)?,
        last,
    })
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    b
}

/// `1*20DIGIT` within `u64`, exactly what the general parser's `parse_decimal` accepts.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let mut n = 0u64;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// The `esmtp-param`s of `list`, the octets after a path's `>`, cut the way the general parser cuts them: `list`
/// empty or starting with SP, parameters separated by one or more SP, the keyword up to the first `=`, the value
/// (`None` without `=`) up to the next SP. Values are not checked here: each keyword's handler checks its own.
struct Params<'a> {
    list: &'a [u8],
    i: usize,
}

/// One step of [`Params`].
enum Step<'a> {
    /// A keyword and its value, if it has one.
    Param(&'a [u8], Option<&'a [u8]>),
    /// The end of the list.
    End,
}

impl<'a> Params<'a> {
    #[inline(always)]
    fn new(list: &'a [u8]) -> Option<Self> {
        match list.first() {
            None | Some(b' ') => Some(Self { list, i: 0 }),
            Some(_) => None,
        }
    }

    /// The next parameter, or `None` if its keyword holds an octet that is not a keyword octet (left to the
    /// general parser).
    #[inline(always)]
    fn next(&mut self) -> Option<Step<'a>> {
        let (list, mut i) = (self.list, self.i);
        while list.get(i) == Some(&b' ') {
            i += 1;
        }
        if i == list.len() {
            return Some(Step::End);
        }
        let k = i;
        while let Some(&c) = list.get(i)
            && class::is(c, KEYCHAR)
        {
            i += 1;
        }
        let key = &list[k..i];
        let value = match list.get(i) {
            None | Some(b' ') => None,
            Some(b'=') => {
                i += 1;
                let v = i;
                while let Some(&c) = list.get(i)
                    && c != b' '
                {
                    i += 1;
                }
                Some(&list[v..i])
            }
            Some(_) => return None,
        };
        self.i = i;
        Some(Step::Param(key, value))
    }
}

/// A parameter value as `str`, for the general parser's value checks (xtext, keywords, NOTIFY words), which
/// admit ASCII only.
fn ascii(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v).ok()
}

/// The MAIL parameters the general parser's `mail_params` accepts, each once (RFC 1870, RFC 6152, RFC 3030,
/// RFC 6531, RFC 8689, RFC 3461).
#[inline(always)]
fn mail_params(list: &[u8]) -> Option<MailParamsRef<'_>> {
    let mut params = Params::new(list)?;
    let mut m = MailParamsRef::default();
    while let Step::Param(key, value) = params.next()? {
        match value {
            Some(v) if SIZE.matches(key) && m.size.is_none() => m.size = Some(decimal(v)?),
            Some(v) if BODY.matches(key) && m.body.is_none() => {
                m.body = Some(if EIGHT_BIT_MIME.matches(v) {
                    Body::EightBitMime
                } else if SEVEN_BIT.matches(v) {
                    Body::SevenBit
                } else if BINARY_MIME.matches(v) {
                    Body::BinaryMime
                } else {
                    return None;
                })
            }
            None if SMTPUTF8.matches(key) && !m.smtputf8 => m.smtputf8 = true,
            None if REQUIRETLS.matches(key) && !m.requiretls => m.requiretls = true,
            Some(v) if RET.matches(key) && m.ret.is_none() => {
                m.ret = Some(if FULL.matches(v) {
                    Ret::Full
                } else if HDRS.matches(v) {
                    Ret::Headers
                } else {
                    return None;
                })
            }
            Some(v) if ENVID.matches(key) && m.envid.is_none() => m.envid = Some(envid(ascii(v)?)?),
            _ => return None,
        }
    }
    Some(m)
}

/// The RCPT parameters the general parser's `rcpt_params` accepts, each once (RFC 3461).
#[inline(always)]
fn rcpt_params(list: &[u8]) -> Option<RcptParamsRef<'_>> {
    let mut params = Params::new(list)?;
    let mut r = RcptParamsRef::default();
    while let Step::Param(key, value) = params.next()? {
        match value {
            Some(v) if NOTIFY.matches(key) && r.notify.is_none() => {
                r.notify = Some(notify(ascii(v)?)?)
            }
            Some(v) if ORCPT.matches(key) && r.orcpt.is_none() => r.orcpt = Some(orcpt(ascii(v)?)?),
            _ => return None,
        }
    }
    Some(r)
}
