//! Validated SMTP addresses: RFC 5321 section 4.1.2 (command argument syntax) and 4.1.3 (address literals),
//! with the RFC 6531 (SMTPUTF8) extension of `atext`, `qtext` and sub-domains to UTF-8, and the length limits of
//! RFC 5321 section 4.5.3.1.
//!
//! Parsing is permissive about UTF-8 (every type records whether it is pure ASCII); the server session refuses a
//! non-ASCII address in a transaction that did not declare `SMTPUTF8` (RFC 6531 section 3.4).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::class::{self, ATEXT, LDH};

/// RFC 5321 4.5.3.1.1: the maximum total length of a user name or other local-part is 64 octets.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 5321 4.5.3.1.2: the maximum total length of a domain name or number is 255 octets.
pub const MAX_DOMAIN_LEN: usize = 255;
/// RFC 5321 4.5.3.1.3: the maximum total length of a reverse-path or forward-path is 256 octets, including the
/// punctuation and element separators.
pub const MAX_PATH_LEN: usize = 256;

/// Why an address, domain or path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// A domain is empty, has an empty label, or a label with a character outside letters, digits, hyphen.
    #[error("invalid domain")]
    InvalidDomain,
    /// An address literal (`[...]`) is not an IPv4, `IPv6:` or general address literal.
    #[error("invalid address literal")]
    InvalidAddressLiteral,
    /// The local part is neither a dot-string nor a quoted string.
    #[error("invalid local part")]
    InvalidLocalPart,
    /// The local part is longer than 64 octets (RFC 5321 4.5.3.1.1).
    #[error("local part too long")]
    LocalPartTooLong,
    /// The domain is longer than 255 octets (RFC 5321 4.5.3.1.2), or a label longer than 63.
    #[error("domain too long")]
    DomainTooLong,
    /// The path is longer than 256 octets (RFC 5321 4.5.3.1.3).
    #[error("path too long")]
    PathTooLong,
    /// The path is not enclosed in angle brackets, or has no `@`, or a malformed source route.
    #[error("bad path syntax")]
    PathSyntax,
}

/// A domain name: dot-separated labels of letters, digits and hyphens (RFC 5321 4.1.2 `Domain`), or U-labels
/// (RFC 6531). Labels may also contain `_`, which appears in real host names; nothing else is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

impl Domain {
    /// Parse and validate a domain.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        check_domain(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The domain as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the domain is pure ASCII (no U-label).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Domain {
    type Error = AddressError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// An address literal (RFC 5321 4.1.3): `[192.0.2.1]`, `[IPv6:2001:db8::1]` or a general address literal
/// `[tag:content]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressLiteral {
    /// `IPv4-address-literal`.
    Ipv4(Ipv4Addr),
    /// `IPv6-address-literal`.
    Ipv6(Ipv6Addr),
    /// `General-address-literal = Standardized-tag ":" 1*dcontent`.
    General {
        /// The standardized tag.
        tag: String,
        /// The content after the colon.
        content: String,
    },
}

impl AddressLiteral {
    /// Parse a literal including its square brackets.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        AddressLiteralRef::parse(s).map(AddressLiteralRef::into_owned)
    }
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(a) => write!(f, "[{a}]"),
            Self::Ipv6(a) => write!(f, "[IPv6:{a}]"),
            Self::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// The right-hand side of a mailbox, or the EHLO argument: a domain or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An address literal.
    Literal(AddressLiteral),
}

impl Host {
    /// Parse a domain, or an address literal when `s` starts with `[`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        HostRef::parse(s).map(HostRef::into_owned)
    }

    /// Whether the host is pure ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Domain(d) => d.is_ascii(),
            Self::Literal(_) => true,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::Literal(l) => l.fmt(f),
        }
    }
}

impl FromStr for Host {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// RFC 5321 4.1.2 `atext` (RFC 5322 3.2.3), extended to UTF-8 by RFC 6531 3.3.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

/// A mailbox `Local-part "@" ( Domain / address-literal )` (RFC 5321 4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local_part: String,
    host: Host,
}

impl Mailbox {
    /// Parse `local@domain` (without angle brackets).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        MailboxRef::parse(s).map(MailboxRef::into_owned)
    }

    /// The local part as written (a quoted string keeps its quotes).
    pub fn local_part(&self) -> &str {
        &self.local_part
    }

    /// The domain or address literal.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Whether the mailbox is pure ASCII (else it needs SMTPUTF8, RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.host.is_ascii()
    }

    /// `postmaster@host`: the mailbox every domain must have (RFC 5321 4.5.1), for instance the one a
    /// domain-less `<Postmaster>` stands for.
    pub fn postmaster(host: Host) -> Self {
        Self {
            local_part: "postmaster".to_owned(),
            host,
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.host)
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Strip `<` `>` and an optional source route (`@a,@b:`), which RFC 5321 4.1.1.3 says servers must accept and
/// SHOULD ignore. Returns the inner mailbox text (possibly empty).
fn unwrap_path(s: &str) -> Result<&str, AddressError> {
    if s.len() > MAX_PATH_LEN {
        return Err(AddressError::PathTooLong);
    }
    let inner = s
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .ok_or(AddressError::PathSyntax)?;
    if inner.starts_with('@') {
        // A-d-l = At-domain *( "," At-domain ) ":"
        let (adl, mailbox) = inner.split_once(':').ok_or(AddressError::PathSyntax)?;
        for at_domain in adl.split(',') {
            check_domain(
                at_domain
                    .strip_prefix('@')
                    .ok_or(AddressError::PathSyntax)?,
            )?;
        }
        return Ok(mailbox);
    }
    Ok(inner)
}

/// `Reverse-path = Path / "<>"` (RFC 5321 4.1.2), the MAIL FROM argument.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: the null reverse path of bounces (RFC 5321 4.5.5).
    Null,
    /// A mailbox.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// Parse a path including its angle brackets.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        ReversePathRef::parse(s).map(ReversePathRef::into_owned)
    }

    /// Whether the path is pure ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Null => true,
            Self::Mailbox(m) => m.is_ascii(),
        }
    }

    /// The mailbox, or `None` for the null path.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Self::Null => None,
            Self::Mailbox(m) => Some(m),
        }
    }
}

impl From<Mailbox> for ReversePath {
    fn from(m: Mailbox) -> Self {
        Self::Mailbox(m)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl FromStr for ReversePath {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A RCPT TO argument: `"<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path` (RFC 5321 4.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (RFC 5321 4.5.1), matched case-insensitively.
    Postmaster,
    /// A mailbox.
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// Parse a path including its angle brackets.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        ForwardPathRef::parse(s).map(ForwardPathRef::into_owned)
    }

    /// Whether the path is pure ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Postmaster => true,
            Self::Mailbox(m) => m.is_ascii(),
        }
    }

    /// The mailbox, or `None` for the domain-less `<Postmaster>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Self::Postmaster => None,
            Self::Mailbox(m) => Some(m),
        }
    }
}

impl From<Mailbox> for ForwardPath {
    fn from(m: Mailbox) -> Self {
        Self::Mailbox(m)
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster => f.write_str("<Postmaster>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl FromStr for ForwardPath {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// Borrowed, zero-allocation forms of the address types, validated octet by octet. The owned types' `parse`
// functions are these plus one copy, so both accept exactly the same language.

/// Validate a domain (RFC 5321 4.1.2 `Domain`, RFC 6531 U-labels, the limits of 4.5.3.1.2). ASCII labels are
/// checked with the octet class table; a label holding a non-ASCII octet sends the whole domain to the
/// character-level check, which gives the same verdict on ASCII labels.
fn check_domain(s: &str) -> Result<(), AddressError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(AddressError::InvalidDomain);
    }
    if b.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::DomainTooLong);
    }
    let mut start = 0;
    loop {
        let end = b[start..]
            .iter()
            .position(|&c| c == b'.')
            .map_or(b.len(), |k| start + k);
        let label = &b[start..end];
        let (Some(&first), Some(&last)) = (label.first(), label.last()) else {
            return Err(AddressError::InvalidDomain);
        };
        if label.len() > 63 {
            return Err(AddressError::DomainTooLong);
        }
        if !label.iter().all(|&c| class::is(c, LDH)) {
            if !s.is_ascii() {
                return check_domain_chars(s);
            }
            return Err(AddressError::InvalidDomain);
        }
        if first == b'-' || last == b'-' {
            return Err(AddressError::InvalidDomain);
        }
        if end == b.len() {
            return Ok(());
        }
        start = end + 1;
    }
}

/// The character-level form of [`check_domain`], for domains with U-labels.
fn check_domain_chars(s: &str) -> Result<(), AddressError> {
    for label in s.split('.') {
        if label.is_empty() {
            return Err(AddressError::InvalidDomain);
        }
        if label.len() > 63 {
            return Err(AddressError::DomainTooLong);
        }
        // sub-domain = Let-dig [Ldh-str]; Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii();
        if !label.chars().all(ok_char) || label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::InvalidDomain);
        }
        if label
            .chars()
            .any(|c| !c.is_ascii() && (c.is_control() || c.is_whitespace()))
        {
            return Err(AddressError::InvalidDomain);
        }
    }
    Ok(())
}

/// RFC 5321 4.1.2 `Dot-string = Atom *("." Atom)`, `Atom = 1*atext`: octet classes for ASCII, characters
/// (RFC 6531 3.3) as soon as a non-ASCII octet shows up.
fn is_dot_string(local: &str) -> bool {
    let b = local.as_bytes();
    let mut after_dot = true;
    for &c in b {
        if c == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if class::is(c, ATEXT) {
            after_dot = false;
        } else if c >= 0x80 {
            return !local.is_empty()
                && !local
                    .split('.')
                    .any(|atom| atom.is_empty() || !atom.chars().all(is_atext));
        } else {
            return false;
        }
    }
    !after_dot
}

/// A validated address literal borrowed from the input: [`AddressLiteral`] without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressLiteralRef<'a> {
    /// `IPv4-address-literal`.
    Ipv4(Ipv4Addr),
    /// `IPv6-address-literal`.
    Ipv6(Ipv6Addr),
    /// `General-address-literal = Standardized-tag ":" 1*dcontent`.
    General {
        /// The standardized tag.
        tag: &'a str,
        /// The content after the colon.
        content: &'a str,
    },
}

impl<'a> AddressLiteralRef<'a> {
    /// Parse a literal including its square brackets (same rules as [`AddressLiteral::parse`]).
    pub fn parse(s: &'a str) -> Result<Self, AddressError> {
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or(AddressError::InvalidAddressLiteral)?;
        if let Some(v6) = inner
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
            .map(|_| &inner[5..])
        {
            return v6
                .parse()
                .map(Self::Ipv6)
                .map_err(|_| AddressError::InvalidAddressLiteral);
        }
        if let Ok(v4) = inner.parse::<Ipv4Addr>() {
            return Ok(Self::Ipv4(v4));
        }
        // Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126
        let (tag, content) = inner
            .split_once(':')
            .ok_or(AddressError::InvalidAddressLiteral)?;
        let tag_ok = !tag.is_empty()
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !tag.ends_with('-');
        let content_ok = !content.is_empty()
            && content
                .bytes()
                .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
        if tag_ok && content_ok {
            Ok(Self::General { tag, content })
        } else {
            Err(AddressError::InvalidAddressLiteral)
        }
    }

    /// The owned form.
    pub fn into_owned(self) -> AddressLiteral {
        match self {
            Self::Ipv4(a) => AddressLiteral::Ipv4(a),
            Self::Ipv6(a) => AddressLiteral::Ipv6(a),
            Self::General { tag, content } => AddressLiteral::General {
                tag: tag.to_owned(),
                content: content.to_owned(),
            },
        }
    }
}

/// A validated domain or address literal borrowed from the input: [`Host`] without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostRef<'a> {
    /// A domain name, as written (validated like [`Domain::parse`]).
    Domain(&'a str),
    /// An address literal.
    Literal(AddressLiteralRef<'a>),
}

impl<'a> HostRef<'a> {
    /// Parse a domain, or an address literal when `s` starts with `[` (same rules as [`Host::parse`]).
    pub fn parse(s: &'a str) -> Result<Self, AddressError> {
        if s.starts_with('[') {
            AddressLiteralRef::parse(s).map(Self::Literal)
        } else {
            check_domain(s).map(|()| Self::Domain(s))
        }
    }

    /// Whether the host is pure ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Domain(d) => d.is_ascii(),
            Self::Literal(_) => true,
        }
    }

    /// The owned form.
    pub fn into_owned(self) -> Host {
        match self {
            Self::Domain(d) => Host::Domain(Domain(d.to_owned())),
            Self::Literal(l) => Host::Literal(l.into_owned()),
        }
    }
}

/// A validated mailbox borrowed from the input: [`Mailbox`] without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailboxRef<'a> {
    local_part: &'a str,
    host: HostRef<'a>,
}

impl<'a> MailboxRef<'a> {
    /// Parse `local@domain` without angle brackets (same rules as [`Mailbox::parse`]).
    pub fn parse(s: &'a str) -> Result<Self, AddressError> {
        let local_end = if s.starts_with('"') {
            // Quoted-string = DQUOTE *QcontentSMTP DQUOTE
            let mut escaped = false;
            let mut end = None;
            for (i, c) in s.char_indices().skip(1) {
                if escaped {
                    // quoted-pairSMTP = %d92 %d32-126
                    if !(' '..='~').contains(&c) {
                        return Err(AddressError::InvalidLocalPart);
                    }
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i + 1);
                    break;
                } else if c.is_ascii()
                    && !(c == ' '
                        || c == '!'
                        || ('#'..='[').contains(&c)
                        || (']'..='~').contains(&c))
                {
                    // qtextSMTP = %d32-33 / %d35-91 / %d93-126
                    return Err(AddressError::InvalidLocalPart);
                } else if !c.is_ascii() && c.is_control() {
                    return Err(AddressError::InvalidLocalPart);
                }
            }
            end.ok_or(AddressError::InvalidLocalPart)?
        } else {
            // Dot-string = Atom *("." Atom)
            let end = s
                .bytes()
                .position(|c| c == b'@')
                .ok_or(AddressError::PathSyntax)?;
            if !is_dot_string(&s[..end]) {
                return Err(AddressError::InvalidLocalPart);
            }
            end
        };
        let local_part = &s[..local_end];
        if local_part.len() > MAX_LOCAL_PART_LEN {
            return Err(AddressError::LocalPartTooLong);
        }
        let rest = s[local_end..]
            .strip_prefix('@')
            .ok_or(AddressError::PathSyntax)?;
        let host = HostRef::parse(rest)?;
        Ok(Self { local_part, host })
    }

    /// The local part as written (a quoted string keeps its quotes).
    pub fn local_part(&self) -> &'a str {
        self.local_part
    }

    /// The domain or address literal.
    pub fn host(&self) -> HostRef<'a> {
        self.host
    }

    /// Whether the mailbox is pure ASCII (else it needs SMTPUTF8, RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.host.is_ascii()
    }

    /// The owned form.
    pub fn into_owned(self) -> Mailbox {
        Mailbox {
            local_part: self.local_part.to_owned(),
            host: self.host.into_owned(),
        }
    }
}

/// A validated MAIL FROM path borrowed from the input: [`ReversePath`] without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversePathRef<'a> {
    /// `<>`: the null reverse path.
    Null,
    /// A mailbox.
    Mailbox(MailboxRef<'a>),
}

impl<'a> ReversePathRef<'a> {
    /// Parse a path including its angle brackets (same rules as [`ReversePath::parse`]).
    pub fn parse(s: &'a str) -> Result<Self, AddressError> {
        let inner = unwrap_path(s)?;
        if inner.is_empty() {
            return Ok(Self::Null);
        }
        MailboxRef::parse(inner).map(Self::Mailbox)
    }

    /// The owned form.
    pub fn into_owned(self) -> ReversePath {
        match self {
            Self::Null => ReversePath::Null,
            Self::Mailbox(m) => ReversePath::Mailbox(m.into_owned()),
        }
    }
}

/// A validated RCPT TO path borrowed from the input: [`ForwardPath`] without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardPathRef<'a> {
    /// `<Postmaster>` without a domain.
    Postmaster,
    /// A mailbox.
    Mailbox(MailboxRef<'a>),
}

impl<'a> ForwardPathRef<'a> {
    /// Parse a path including its angle brackets (same rules as [`ForwardPath::parse`]).
    pub fn parse(s: &'a str) -> Result<Self, AddressError> {
        let inner = unwrap_path(s)?;
        if inner.eq_ignore_ascii_case("postmaster") {
            return Ok(Self::Postmaster);
        }
        MailboxRef::parse(inner).map(Self::Mailbox)
    }

    /// The owned form.
    pub fn into_owned(self) -> ForwardPath {
        match self {
            Self::Postmaster => ForwardPath::Postmaster,
            Self::Mailbox(m) => ForwardPath::Mailbox(m.into_owned()),
        }
    }
}

// The fast paths of the command parser: one pass over the octets of the common shapes (plain ASCII
// `<local@domain>`, `<>`, `<Postmaster>`, an ASCII domain), each octet looked up once in the class table. They
// accept only what the general parsers above accept and give the same result for it; `None` means "not this
// simple shape", never "invalid": the caller then runs the general parser, which decides and names the error.

/// The LDH labels of a domain from `b[i]` on (RFC 5321 4.1.2 `sub-domain`, plus `_`; labels of 1 to 63 octets
/// that neither start nor end with `-`, 4.5.3.1.2 via [`check_domain`]'s rules). Returns the index of the
/// first octet after the last label (not a label octet, not `.`), or `None` at the first empty, long or
/// badly hyphenated label.
#[inline(always)]
fn scan_labels(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let label = i;
        while let Some(&c) = b.get(i)
            && class::is(c, LDH)
        {
            i += 1;
        }
        let n = i - label;
        // `n > 0` is tested first: then `label < i <= b.len()`, so both octets exist.
        if n == 0 || n > 63 || b.get(label) == Some(&b'-') || b.get(i - 1) == Some(&b'-') {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

/// Fast path of [`HostRef::parse`] for a whole ASCII domain: `Some` exactly when `b` is a domain
/// [`check_domain`] accepts made of ASCII LDH labels only.
pub(crate) fn scan_simple_domain(b: &[u8]) -> Option<HostRef<'_>> {
    if b.len() > MAX_DOMAIN_LEN || scan_labels(b, 0)? != b.len() {
        return None;
    }
    // All octets are ASCII (class table), so this never fails; it is the safe way to borrow them as `str`.
    std::str::from_utf8(b).ok().map(HostRef::Domain)
}

/// What [`scan_simple_path`] found between the angle brackets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SimplePath<'a> {
    /// A single atom without `@`, possibly empty: `<>` or `<Postmaster>` (or an invalid path: the caller decides).
    Atom(&'a [u8]),
    /// `<Dot-string "@" Domain>`, validated as [`MailboxRef::parse`] validates it.
    Mailbox(MailboxRef<'a>),
}

/// Fast path of [`unwrap_path`] plus [`MailboxRef::parse`]: a path at the start of `b`, `"<" Dot-string "@"
/// Domain ">"` in ASCII without source route, quoted string or address literal, within the limits of RFC 5321
/// 4.5.3.1 (local part 64, path 256 octets; the domain limit of 255 follows from the path limit). Returns the
/// path and the octets after its `>`.
#[inline(always)]
pub(crate) fn scan_simple_path(b: &[u8]) -> Option<(SimplePath<'_>, &[u8])> {
    if b.first() != Some(&b'<') {
        return None;
    }
    // Dot-string = Atom *("." Atom): a "." only between two non-empty atoms.
    let mut i = 1;
    let at = loop {
        let atom = i;
        while let Some(&c) = b.get(i)
            && class::is(c, ATEXT)
        {
            i += 1;
        }
        match b.get(i) {
            Some(b'.') if i > atom => i += 1,
            Some(b'@') if i > atom => break i,
            Some(b'>') if atom == 1 => return Some((SimplePath::Atom(&b[1..i]), &b[i + 1..])),
            _ => return None,
        }
    };
    if at - 1 > MAX_LOCAL_PART_LEN {
        return None;
    }
    let end = scan_labels(b, at + 1)?;
    if b.get(end) != Some(&b'>') || end + 1 > MAX_PATH_LEN {
        return None;
    }
    // All octets between the brackets are ASCII (class table): this never fails.
    let inner = std::str::from_utf8(&b[1..end]).ok()?;
    let (local_part, domain) = (inner.get(..at - 1)?, inner.get(at..)?);
    let mailbox = MailboxRef {
        local_part,
        host: HostRef::Domain(domain),
    };
    Some((SimplePath::Mailbox(mailbox), &b[end + 1..]))
}

/// `Serialize` and `Deserialize` as text (feature `serde`).
///
/// [`Domain`], [`AddressLiteral`], [`Host`] and [`Mailbox`] are their `Display` form, read back with their
/// `parse`. A path is stored as its mailbox without the angle brackets of the SMTP command (the form a queue
/// file keeps): [`ReversePath::Null`] is the empty string, [`ForwardPath::Postmaster`] is `Postmaster`
/// (read case-insensitively). Reading a path checks the path length limit of RFC 5321 4.5.3.1.3 as `parse`
/// does; a source route is not accepted.
#[cfg(feature = "serde")]
mod serde_impls {
    use super::{
        AddressError, AddressLiteral, Domain, ForwardPath, Host, MAX_PATH_LEN, Mailbox, ReversePath,
    };
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    /// Text forms read back with a parser, written with `Display`.
    macro_rules! display_and_parse {
        ($($t:ty),*) => {$(
            impl Serialize for $t {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.collect_str(self)
                }
            }

            impl<'de> Deserialize<'de> for $t {
                fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                    let text = String::deserialize(deserializer)?;
                    Self::parse(&text).map_err(D::Error::custom)
                }
            }
        )*};
    }

    display_and_parse!(Domain, AddressLiteral, Host, Mailbox);

    /// The mailbox of a path written without its angle brackets, within the path length limit.
    fn path_mailbox(text: &str) -> Result<Mailbox, AddressError> {
        if text.len() + 2 > MAX_PATH_LEN {
            return Err(AddressError::PathTooLong);
        }
        Mailbox::parse(text)
    }

    impl Serialize for ReversePath {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::Null => serializer.serialize_str(""),
                Self::Mailbox(m) => serializer.collect_str(m),
            }
        }
    }

    impl<'de> Deserialize<'de> for ReversePath {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            if text.is_empty() {
                return Ok(Self::Null);
            }
            path_mailbox(&text)
                .map(Self::Mailbox)
                .map_err(D::Error::custom)
        }
    }

    impl Serialize for ForwardPath {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::Postmaster => serializer.serialize_str("Postmaster"),
                Self::Mailbox(m) => serializer.collect_str(m),
            }
        }
    }

    impl<'de> Deserialize<'de> for ForwardPath {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            if text.eq_ignore_ascii_case("postmaster") {
                return Ok(Self::Postmaster);
            }
            path_mailbox(&text)
                .map(Self::Mailbox)
                .map_err(D::Error::custom)
        }
    }
}

/// The parsers as they were before the octet-level rewrite, kept as the reference the tests compare against.
#[cfg(test)]
pub(crate) mod legacy {
    use super::*;

    pub(crate) struct D;
    impl D {
        pub(crate) fn parse(s: &str) -> Result<Domain, AddressError> {
            if s.is_empty() {
                return Err(AddressError::InvalidDomain);
            }
            if s.len() > MAX_DOMAIN_LEN {
                return Err(AddressError::DomainTooLong);
            }
            for label in s.split('.') {
                if label.is_empty() {
                    return Err(AddressError::InvalidDomain);
                }
                if label.len() > 63 {
                    return Err(AddressError::DomainTooLong);
                }
                // sub-domain = Let-dig [Ldh-str]; Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
                let ok_char =
                    |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii();
                if !label.chars().all(ok_char) || label.starts_with('-') || label.ends_with('-') {
                    return Err(AddressError::InvalidDomain);
                }
                if label
                    .chars()
                    .any(|c| !c.is_ascii() && (c.is_control() || c.is_whitespace()))
                {
                    return Err(AddressError::InvalidDomain);
                }
            }
            Ok(Domain(s.to_owned()))
        }
    }
    pub(crate) struct L;
    impl L {
        pub(crate) fn parse(s: &str) -> Result<AddressLiteral, AddressError> {
            let inner = s
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or(AddressError::InvalidAddressLiteral)?;
            if let Some(v6) = inner
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
                .map(|_| &inner[5..])
            {
                return v6
                    .parse()
                    .map(AddressLiteral::Ipv6)
                    .map_err(|_| AddressError::InvalidAddressLiteral);
            }
            if let Ok(v4) = inner.parse::<Ipv4Addr>() {
                return Ok(AddressLiteral::Ipv4(v4));
            }
            // Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126
            let (tag, content) = inner
                .split_once(':')
                .ok_or(AddressError::InvalidAddressLiteral)?;
            let tag_ok = !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !tag.ends_with('-');
            let content_ok = !content.is_empty()
                && content
                    .bytes()
                    .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
            if tag_ok && content_ok {
                Ok(AddressLiteral::General {
                    tag: tag.to_owned(),
                    content: content.to_owned(),
                })
            } else {
                Err(AddressError::InvalidAddressLiteral)
            }
        }
    }
    pub(crate) fn host(s: &str) -> Result<Host, AddressError> {
        if s.starts_with('[') {
            L::parse(s).map(Host::Literal)
        } else {
            D::parse(s).map(Host::Domain)
        }
    }
    pub(crate) struct M;
    impl M {
        pub(crate) fn parse(s: &str) -> Result<Mailbox, AddressError> {
            let local_end = if s.starts_with('"') {
                // Quoted-string = DQUOTE *QcontentSMTP DQUOTE
                let mut escaped = false;
                let mut end = None;
                for (i, c) in s.char_indices().skip(1) {
                    if escaped {
                        // quoted-pairSMTP = %d92 %d32-126
                        if !(' '..='~').contains(&c) {
                            return Err(AddressError::InvalidLocalPart);
                        }
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = Some(i + 1);
                        break;
                    } else if c.is_ascii()
                        && !(c == ' '
                            || c == '!'
                            || ('#'..='[').contains(&c)
                            || (']'..='~').contains(&c))
                    {
                        // qtextSMTP = %d32-33 / %d35-91 / %d93-126
                        return Err(AddressError::InvalidLocalPart);
                    } else if !c.is_ascii() && c.is_control() {
                        return Err(AddressError::InvalidLocalPart);
                    }
                }
                end.ok_or(AddressError::InvalidLocalPart)?
            } else {
                // Dot-string = Atom *("." Atom)
                let end = s.find('@').ok_or(AddressError::PathSyntax)?;
                let local = &s[..end];
                if local.is_empty()
                    || local
                        .split('.')
                        .any(|atom| atom.is_empty() || !atom.chars().all(is_atext))
                {
                    return Err(AddressError::InvalidLocalPart);
                }
                end
            };
            let local_part = &s[..local_end];
            if local_part.len() > MAX_LOCAL_PART_LEN {
                return Err(AddressError::LocalPartTooLong);
            }
            let rest = s[local_end..]
                .strip_prefix('@')
                .ok_or(AddressError::PathSyntax)?;
            let host = host(rest)?;
            Ok(Mailbox {
                local_part: local_part.to_owned(),
                host,
            })
        }
    }
    fn unwrap_path_legacy(s: &str) -> Result<&str, AddressError> {
        if s.len() > MAX_PATH_LEN {
            return Err(AddressError::PathTooLong);
        }
        let inner = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or(AddressError::PathSyntax)?;
        if inner.starts_with('@') {
            // A-d-l = At-domain *( "," At-domain ) ":"
            let (adl, mailbox) = inner.split_once(':').ok_or(AddressError::PathSyntax)?;
            for at_domain in adl.split(',') {
                D::parse(
                    at_domain
                        .strip_prefix('@')
                        .ok_or(AddressError::PathSyntax)?,
                )?;
            }
            return Ok(mailbox);
        }
        Ok(inner)
    }

    pub(crate) fn reverse_path(s: &str) -> Result<ReversePath, AddressError> {
        let inner = unwrap_path_legacy(s)?;
        if inner.is_empty() {
            return Ok(ReversePath::Null);
        }
        M::parse(inner).map(ReversePath::Mailbox)
    }

    pub(crate) fn forward_path(s: &str) -> Result<ForwardPath, AddressError> {
        let inner = unwrap_path_legacy(s)?;
        if inner.eq_ignore_ascii_case("postmaster") {
            return Ok(ForwardPath::Postmaster);
        }
        M::parse(inner).map(ForwardPath::Mailbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(Domain::parse("mail.example.com").is_ok());
        assert!(Domain::parse("xn--bcher-kva.example").is_ok());
        assert!(Domain::parse("bücher.example").is_ok());
        assert_eq!(Domain::parse(""), Err(AddressError::InvalidDomain));
        assert_eq!(Domain::parse("a..b"), Err(AddressError::InvalidDomain));
        assert_eq!(Domain::parse("-a.b"), Err(AddressError::InvalidDomain));
        assert_eq!(Domain::parse("a b"), Err(AddressError::InvalidDomain));
        assert_eq!(
            Domain::parse(&"a".repeat(64)),
            Err(AddressError::DomainTooLong)
        );
        let long = vec!["abcdefgh"; 30].join(".");
        assert_eq!(Domain::parse(&long), Err(AddressError::DomainTooLong));
    }

    #[test]
    fn literals() {
        assert_eq!(
            Host::parse("[192.0.2.1]").unwrap().to_string(),
            "[192.0.2.1]"
        );
        assert_eq!(
            Host::parse("[IPv6:2001:db8::1]").unwrap().to_string(),
            "[IPv6:2001:db8::1]"
        );
        assert!(Host::parse("[x-tag:abc]").is_ok());
        assert!(Host::parse("[300.1.1.1]").is_err());
        assert!(Host::parse("[IPv6:zz]").is_err());
        assert!(Host::parse("[1.2.3.4").is_err());
    }

    #[test]
    fn mailboxes() {
        let m = Mailbox::parse("Smith@bar.com").unwrap();
        assert_eq!(m.local_part(), "Smith");
        assert_eq!(m.host().to_string(), "bar.com");
        assert!(Mailbox::parse("\"a b@c\"@example.org").is_ok());
        assert!(Mailbox::parse("a.b@[192.0.2.1]").is_ok());
        assert!(Mailbox::parse("a..b@x").is_err());
        assert!(Mailbox::parse("a@").is_err());
        assert!(Mailbox::parse("noat").is_err());
        assert!(Mailbox::parse("a(b)@x").is_err());
        assert_eq!(
            Mailbox::parse(&format!("{}@x", "a".repeat(65))),
            Err(AddressError::LocalPartTooLong)
        );
        let u = Mailbox::parse("用户@例子.广告").unwrap();
        assert!(!u.is_ascii());
    }

    #[test]
    fn paths() {
        assert_eq!(ReversePath::parse("<>").unwrap(), ReversePath::Null);
        assert_eq!(
            ForwardPath::parse("<postMaster>").unwrap(),
            ForwardPath::Postmaster
        );
        // RFC 5321 4.1.1.3 source routes are accepted and ignored.
        let p = ForwardPath::parse("<@hosta.int,@jkl.org:userc@d.bar.org>").unwrap();
        assert_eq!(p.to_string(), "<userc@d.bar.org>");
        assert!(ReversePath::parse("a@b").is_err());
        assert!(ForwardPath::parse("<>").is_err());
        let long = format!("<{}@{}>", "a".repeat(60), vec!["abcdefgh"; 22].join("."));
        assert_eq!(ForwardPath::parse(&long), Err(AddressError::PathTooLong));
    }

    #[test]
    fn postmaster_and_path_mailboxes() {
        let host = Host::parse("example.org").unwrap();
        let m = Mailbox::postmaster(host);
        assert_eq!(m, Mailbox::parse("postmaster@example.org").unwrap());
        assert_eq!(ReversePath::from(m.clone()).mailbox(), Some(&m));
        assert_eq!(ForwardPath::from(m.clone()).mailbox(), Some(&m));
        assert_eq!(ReversePath::Null.mailbox(), None);
        assert_eq!(ForwardPath::Postmaster.mailbox(), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_text_forms() {
        use serde_json::{from_str, to_string};
        let m = Mailbox::parse("\"a b\"@[IPv6:2001:db8::1]").unwrap();
        assert_eq!(to_string(&m).unwrap(), r#""\"a b\"@[IPv6:2001:db8::1]""#);
        assert_eq!(from_str::<Mailbox>(&to_string(&m).unwrap()).unwrap(), m);
        let d = Domain::parse("bücher.example").unwrap();
        assert_eq!(to_string(&d).unwrap(), r#""bücher.example""#);
        assert_eq!(from_str::<Domain>(r#""bücher.example""#).unwrap(), d);
        let h = Host::parse("[192.0.2.1]").unwrap();
        assert_eq!(from_str::<Host>(&to_string(&h).unwrap()).unwrap(), h);
        assert!(from_str::<Mailbox>(r#""no-at-sign""#).is_err());

        // Paths: the mailbox without angle brackets; "" is the null reverse path.
        let p = ReversePath::parse("<alice@example.net>").unwrap();
        assert_eq!(to_string(&p).unwrap(), r#""alice@example.net""#);
        assert_eq!(
            from_str::<ReversePath>(r#""alice@example.net""#).unwrap(),
            p
        );
        assert_eq!(to_string(&ReversePath::Null).unwrap(), r#""""#);
        assert_eq!(from_str::<ReversePath>(r#""""#).unwrap(), ReversePath::Null);
        assert!(from_str::<ReversePath>(r#""<alice@example.net>""#).is_err());
        assert!(from_str::<ReversePath>(r#""@relay.example:alice@example.net""#).is_err());
        let f = ForwardPath::parse("<bob@example.org>").unwrap();
        assert_eq!(to_string(&f).unwrap(), r#""bob@example.org""#);
        assert_eq!(from_str::<ForwardPath>(r#""bob@example.org""#).unwrap(), f);
        assert_eq!(
            to_string(&ForwardPath::Postmaster).unwrap(),
            r#""Postmaster""#
        );
        assert_eq!(
            from_str::<ForwardPath>(r#""postMaster""#).unwrap(),
            ForwardPath::Postmaster
        );
        assert!(from_str::<ForwardPath>(r#""""#).is_err());
        // The path length limit holds for the stored form too.
        let long = format!("{}@{}", "a".repeat(60), vec!["abcdefgh"; 22].join("."));
        assert!(Mailbox::parse(&long).is_ok());
        assert!(from_str::<ReversePath>(&to_string(&long).unwrap()).is_err());
        assert!(from_str::<ForwardPath>(&to_string(&long).unwrap()).is_err());
    }

    /// Fragments that exercise every branch of the address grammar.
    fn address_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(String::from("a")),
            Just(String::from("Z9")),
            Just(String::from(".")),
            Just(String::from("@")),
            Just(String::from("-")),
            Just(String::from("_")),
            Just(String::from("\"")),
            Just(String::from("\\")),
            Just(String::from(" ")),
            Just(String::from("<")),
            Just(String::from(">")),
            Just(String::from(",")),
            Just(String::from(":")),
            Just(String::from("[")),
            Just(String::from("]")),
            Just(String::from("IPv6:")),
            Just(String::from("192.0.2.1")),
            Just(String::from("::1")),
            Just(String::from("x-tag")),
            Just(String::from("é")),
            Just(String::from("用户")),
            Just(String::from("\u{85}")),
            Just(String::from("\u{a0}")),
            Just(String::from("\t")),
            Just(String::from("+")),
            Just(String::from("!#$%&'*/=?^`{|}~")),
            Just(String::from("(")),
            Just(String::from("postmaster")),
            Just(String::from("example.org")),
            "[a-z]{60,70}".prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// The octet-level parsers accept and refuse exactly what the character-level ones did.
        #[test]
        fn borrowed_parsers_match_reference(s in address_text()) {
            proptest::prop_assert_eq!(Domain::parse(&s), legacy::D::parse(&s));
            proptest::prop_assert_eq!(Host::parse(&s), legacy::host(&s));
            proptest::prop_assert_eq!(Mailbox::parse(&s), legacy::M::parse(&s));
            proptest::prop_assert_eq!(MailboxRef::parse(&s).map(MailboxRef::into_owned), legacy::M::parse(&s));
            let path = format!("<{s}>");
            proptest::prop_assert_eq!(ReversePath::parse(&path), legacy::reverse_path(&path));
            proptest::prop_assert_eq!(ForwardPath::parse(&path), legacy::forward_path(&path));
            proptest::prop_assert_eq!(ReversePath::parse(&s), legacy::reverse_path(&s));
        }
    }
}
