//! Commands: RFC 5321 section 4.1.1 (verbs and arguments), 4.1.2 (grammar), ESMTP parameters of RFC 1870
//! (SIZE), RFC 6152 (BODY=8BITMIME), RFC 3030 (BODY=BINARYMIME, BDAT), RFC 6531 (SMTPUTF8), RFC 8689
//! (REQUIRETLS) and RFC 3461 (RET, ENVID, NOTIFY, ORCPT).

use std::fmt::Write as _;

use crate::address::{AddressError, ForwardPath, Host, ReversePath};
use crate::reply::Reply;

/// `BODY=` values (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BINARYMIME` (RFC 3030; only with BDAT).
    BinaryMime,
}

/// `RET=` (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `FULL`: return the full message in a failure DSN.
    Full,
    /// `HDRS`: return only the headers.
    Headers,
}

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
            ("SIZE" | "BODY" | "SMTPUTF8" | "REQUIRETLS" | "RET" | "ENVID", _) => return Err(bad()),
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
                if !is_keyword(kind) || addr.is_empty() || v.len() > 500 || !is_xtext(addr) {
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

impl Command {
    /// Parse one command line. `line` must end with CRLF and hold no other CR or LF: a bare CR or LF is an
    /// error for the whole line, never a separator (RFC 5321 2.3.8, 4.1.1).
    pub fn parse(line: &[u8]) -> Result<Self, CommandError> {
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
        let no_arg = |cmd: Self, usage| {
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
                let host = Host::parse(name).map_err(|_| CommandError::Syntax(usage))?;
                Ok(if usage.starts_with('E') {
                    Self::Ehlo(host)
                } else {
                    Self::Helo(host)
                })
            }
            "MAIL" => {
                const USAGE: &str = "MAIL FROM:<address>";
                let (path, list) = arg
                    .and_then(|a| split_path(a, "FROM:"))
                    .ok_or(CommandError::Syntax(USAGE))?;
                let from = ReversePath::parse(path).map_err(CommandError::BadSender)?;
                Ok(Self::Mail {
                    from,
                    params: mail_params(list)?,
                })
            }
            "RCPT" => {
                const USAGE: &str = "RCPT TO:<address>";
                let (path, list) = arg
                    .and_then(|a| split_path(a, "TO:"))
                    .ok_or(CommandError::Syntax(USAGE))?;
                let to = ForwardPath::parse(path).map_err(CommandError::BadRecipient)?;
                Ok(Self::Rcpt {
                    to,
                    params: rcpt_params(list)?,
                })
            }
            "DATA" => no_arg(Self::Data, "DATA"),
            "RSET" => no_arg(Self::Rset, "RSET"),
            "QUIT" => no_arg(Self::Quit, "QUIT"),
            "STARTTLS" => no_arg(Self::StartTls, "STARTTLS"),
            "NOOP" => Ok(Self::Noop),
            "HELP" => Ok(Self::Help(arg.map(str::to_owned))),
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
                    Self::Vrfy(a)
                } else {
                    Self::Expn(a)
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
                Ok(Self::Bdat { size, last })
            }
            _ => Err(CommandError::Unrecognized),
        }
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
}
