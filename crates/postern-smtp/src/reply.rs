//! Replies: RFC 5321 section 4.2 (reply lines, multi-line replies) with RFC 3463 enhanced status codes (RFC 2034
//! `ENHANCEDSTATUSCODES`), an encoder and an incremental, bounded parser for the client side.

use std::fmt;

pub use postern_types::{EnhancedStatus, ReplyCode};
use postern_types::{InvalidEnhancedStatus, InvalidReplyCode};

/// Why a reply could not be built or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The reply code is outside 200..=559 or malformed.
    #[error("invalid reply code")]
    InvalidCode,
    /// The enhanced status code is malformed or its class does not match the reply code.
    #[error("invalid enhanced status code")]
    InvalidEnhancedStatus,
    /// Reply text contains CR, LF or another control character, or is too long.
    #[error("invalid reply text")]
    InvalidText,
    /// A reply line does not start with three digits followed by SP, `-` or CRLF.
    #[error("malformed reply line")]
    Malformed,
    /// The lines of a multi-line reply carry different codes (RFC 5321 4.2.1).
    #[error("inconsistent codes in a multi-line reply")]
    InconsistentCode,
    /// A reply line is longer than the parser's limit.
    #[error("reply line too long")]
    LineTooLong,
    /// A reply has more lines than the parser's limit.
    #[error("too many reply lines")]
    TooManyLines,
    /// A bare CR or LF inside a reply line.
    #[error("bare cr or lf in reply")]
    BareLineEnding,
}

impl From<InvalidReplyCode> for ReplyError {
    fn from(_: InvalidReplyCode) -> Self {
        Self::InvalidCode
    }
}

impl From<InvalidEnhancedStatus> for ReplyError {
    fn from(_: InvalidEnhancedStatus) -> Self {
        Self::InvalidEnhancedStatus
    }
}

/// A reply code of the engine's own replies (constants such as 220 and 250, never peer input).
fn known_code(code: u16) -> ReplyCode {
    ReplyCode::new(code).expect("constant reply code")
}

/// A complete reply: code, optional enhanced status code, and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: ReplyCode,
    enhanced: Option<EnhancedStatus>,
    lines: Vec<String>,
}

/// Longest text accepted in one line built with [`Reply::new`]: 512 octets per reply line (RFC 5321 4.5.3.1.5)
/// minus the code, separator, enhanced code and CRLF.
pub const MAX_REPLY_TEXT: usize = 512 - 4 - 10 - 2;

impl Reply {
    /// Build a reply. Each line must be free of control characters (no CR or LF: nothing can be injected) and at
    /// most [`MAX_REPLY_TEXT`] octets; the enhanced code's class must match the reply code's first digit.
    pub fn new<I, S>(
        code: u16,
        enhanced: Option<EnhancedStatus>,
        lines: I,
    ) -> Result<Self, ReplyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let code = ReplyCode::new(code)?;
        if let Some(e) = enhanced
            && u16::from(e.class()) != code.value() / 100
        {
            return Err(ReplyError::InvalidEnhancedStatus);
        }
        let lines: Vec<String> = lines.into_iter().map(Into::into).collect();
        if lines
            .iter()
            .any(|l| l.len() > MAX_REPLY_TEXT || l.chars().any(char::is_control))
        {
            return Err(ReplyError::InvalidText);
        }
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Ok(Self {
            code,
            enhanced,
            lines,
        })
    }

    /// Internal constructor for replies whose parts are known valid (constant codes and texts).
    pub(crate) fn fixed(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Self {
        let (class, subject, detail) = enhanced;
        Self {
            code: known_code(code),
            // The engine's own constants, never peer input; the tests of each reply cover them.
            enhanced: Some(
                EnhancedStatus::new(class, subject, detail).expect("constant enhanced status"),
            ),
            lines: vec![text.into()],
        }
    }

    /// Internal constructor without an enhanced status (greeting, EHLO).
    pub(crate) fn plain(code: u16, lines: Vec<String>) -> Self {
        Self {
            code: known_code(code),
            enhanced: None,
            lines,
        }
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code, if present.
    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        self.enhanced
    }

    /// The text lines (without code, enhanced status or CRLF; at least one, possibly empty).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The text lines joined with a space, for logs.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Append the wire form: `code-text CRLF` for all lines but the last, `code SP text CRLF` for the last
    /// (RFC 5321 4.2.1); the enhanced code starts each line's text (RFC 2034 section 4).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.text())
    }
}

/// Incremental reply parser with limits on line length and line count. Lines end only at CRLF; a bare CR or LF
/// inside a line is an error, so one reply can never be split into two by a stray octet.
#[derive(Debug, Clone)]
pub struct ReplyParser {
    max_line: usize,
    max_lines: usize,
    partial: Vec<u8>,
    code: Option<ReplyCode>,
    lines: Vec<String>,
}

impl Default for ReplyParser {
    /// Lines of at most 2048 octets (RFC 5321 4.5.3.1.5 requires 512; real servers send longer), 256 lines.
    fn default() -> Self {
        Self::new(2048, 256)
    }
}

impl ReplyParser {
    /// A parser accepting lines of at most `max_line` octets (CRLF included, at least 512) and replies of at
    /// most `max_lines` lines.
    pub fn new(max_line: usize, max_lines: usize) -> Self {
        Self {
            max_line: max_line.max(512),
            max_lines: max_lines.max(1),
            partial: Vec::new(),
            code: None,
            lines: Vec::new(),
        }
    }

    /// Whether a reply has been started but not finished.
    pub fn is_mid_reply(&self) -> bool {
        !self.partial.is_empty() || self.code.is_some()
    }

    /// Consume bytes of `input` up to the end of the first complete reply. Returns the number of bytes consumed
    /// and the reply once it is complete. Incomplete lines are kept internally (bounded by the line limit). After
    /// an error the parser is unusable for this connection: the caller must close it.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        let mut consumed = 0;
        while consumed < input.len() {
            let rest = &input[consumed..];
            let (take, complete) = match memchr::memchr(b'\n', rest) {
                Some(i) => (i + 1, true),
                None => (rest.len(), false),
            };
            if self.partial.len() + take > self.max_line {
                return Err(ReplyError::LineTooLong);
            }
            self.partial.extend_from_slice(&rest[..take]);
            consumed += take;
            if !complete {
                break;
            }
            let line = std::mem::take(&mut self.partial);
            if let Some(reply) = self.line(&line)? {
                return Ok((consumed, Some(reply)));
            }
        }
        Ok((consumed, None))
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        // The line ends with LF (caller guarantees); it must be CRLF with no other CR or LF.
        let body = line
            .strip_suffix(b"\r\n")
            .ok_or(ReplyError::BareLineEnding)?;
        if body.contains(&b'\r') || body.contains(&b'\n') {
            return Err(ReplyError::BareLineEnding);
        }
        if body.len() < 3 || !body[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed);
        }
        let code = ReplyCode::new(
            u16::from(body[0] - b'0') * 100
                + u16::from(body[1] - b'0') * 10
                + u16::from(body[2] - b'0'),
        )
        .map_err(|_| ReplyError::Malformed)?;
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::InconsistentCode);
        }
        self.code = Some(code);
        let (last, text) = match body.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &body[4..]),
            Some(b'-') => (false, &body[4..]),
            Some(_) => return Err(ReplyError::Malformed),
        };
        if self.lines.len() >= self.max_lines {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(sanitize_text(text));
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        Ok(Some(split_enhanced(code, lines)))
    }
}

/// The text of a received reply line as a `String` that [`Reply::new`] would accept and that encodes to at most
/// as many octets as were received: valid UTF-8 characters are kept, except control characters (NUL, TAB, DEL,
/// C1 controls); each of those and each octet of an invalid UTF-8 sequence becomes one `?`. (The Unicode
/// replacement character of `String::from_utf8_lossy` takes three octets, so a line of invalid octets would
/// grow past the line limit when encoded again.) RFC 5321 4.2 only allows printable US-ASCII and SP in reply
/// text, so nothing a conforming server sends is changed beyond UTF-8 text (RFC 6531 3.7.4).
fn sanitize_text(text: &[u8]) -> String {
    let mut s = String::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        s.extend(
            chunk
                .valid()
                .chars()
                .map(|c| if c.is_control() { '?' } else { c }),
        );
        s.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    s
}

/// RFC 2034 section 4: when the server uses enhanced codes, every line's text starts with one whose class
/// matches the reply code. The code is taken from the first line and stripped from every line only when every
/// line carries it: a reply where some line lacks it keeps its lines as received and has no enhanced code, so
/// that encoding it again (which puts the code on every line) never adds octets to a line.
fn split_enhanced(code: ReplyCode, mut lines: Vec<String>) -> Reply {
    let strip = |l: &str, prefix: &str| -> Option<usize> {
        let rest = l.strip_prefix(prefix)?;
        if rest.is_empty() {
            Some(prefix.len())
        } else if rest.starts_with(' ') {
            Some(prefix.len() + 1)
        } else {
            None
        }
    };
    let first = lines
        .first()
        .and_then(|l| {
            let word = l.split(' ').next().unwrap_or_default();
            EnhancedStatus::parse(word).filter(|e| u16::from(e.class()) == code.value() / 100)
        })
        .filter(|e| {
            let prefix = e.to_string();
            lines.iter().all(|l| strip(l, &prefix).is_some())
        });
    if let Some(e) = first {
        let prefix = e.to_string();
        for l in &mut lines {
            if let Some(n) = strip(l, &prefix) {
                l.drain(..n);
            }
        }
    }
    Reply {
        code,
        enhanced: first,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            match p.feed(&input[pos..]) {
                Ok((n, r)) => {
                    pos += n;
                    if let Some(r) = r {
                        out.push(Ok(r));
                    }
                }
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn encode_multi_line() {
        let r = Reply::new(250, EnhancedStatus::new(2, 1, 0).ok(), ["Ok", "second"]).unwrap();
        assert_eq!(r.to_bytes(), b"250-2.1.0 Ok\r\n250 2.1.0 second\r\n");
        let r = Reply::new(354, None, ["End data with <CR><LF>.<CR><LF>"]).unwrap();
        assert_eq!(r.to_bytes(), b"354 End data with <CR><LF>.<CR><LF>\r\n");
    }

    #[test]
    fn new_refuses_injection_and_mismatch() {
        assert_eq!(
            Reply::new(250, None, ["a\r\n250 b"]),
            Err(ReplyError::InvalidText)
        );
        assert_eq!(
            Reply::new(250, EnhancedStatus::new(5, 1, 1).ok(), ["x"]),
            Err(ReplyError::InvalidEnhancedStatus)
        );
        assert_eq!(Reply::new(199, None, ["x"]), Err(ReplyError::InvalidCode));
        assert_eq!(Reply::new(260, None, ["x"]), Err(ReplyError::InvalidCode));
    }

    #[test]
    fn parse_split_and_enhanced() {
        let wire =
            b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 100\r\n550 5.1.1 No such user\r\n";
        for split in 0..wire.len() {
            let mut p = ReplyParser::default();
            let (n1, r1) = p.feed(&wire[..split]).unwrap();
            assert!(n1 <= split);
            let mut replies: Vec<Reply> = r1.into_iter().collect();
            let mut pos = n1;
            while pos < wire.len() {
                let (n, r) = p.feed(&wire[pos..]).unwrap();
                pos += n;
                replies.extend(r);
            }
            assert_eq!(replies.len(), 2, "split {split}");
            assert_eq!(
                replies[0].lines(),
                ["mx.example.org", "PIPELINING", "SIZE 100"]
            );
            assert_eq!(replies[1].code().value(), 550);
            assert_eq!(replies[1].enhanced().unwrap().to_string(), "5.1.1");
            assert_eq!(replies[1].lines(), ["No such user"]);
        }
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            parse_all(b"250-a\r\n251 b\r\n"),
            vec![Err(ReplyError::InconsistentCode)]
        );
        assert_eq!(parse_all(b"250 a\n"), vec![Err(ReplyError::BareLineEnding)]);
        assert_eq!(
            parse_all(b"250 a\r250 b\r\n"),
            vec![Err(ReplyError::BareLineEnding)]
        );
        assert_eq!(parse_all(b"25x ok\r\n"), vec![Err(ReplyError::Malformed)]);
        assert_eq!(parse_all(b"250+ok\r\n"), vec![Err(ReplyError::Malformed)]);
        let long = [b"250 ".as_slice(), &[b'a'; 3000], b"\r\n"].concat();
        assert_eq!(parse_all(&long), vec![Err(ReplyError::LineTooLong)]);
        assert_eq!(parse_all(b"220\r\n").len(), 1);
    }

    /// Fuzz finding: invalid UTF-8 and control characters in a received text must not make the encoded reply
    /// longer than the received one, nor refused by `Reply::new`.
    #[test]
    fn hostile_text_round_trips() {
        let mut cases = vec![[b"250 ".as_slice(), &[0xFF; 700], b"\r\n"].concat()];
        cases.push(b"250 a\0b\tc\x7f\xc2\x85d \xc3\xa9\r\n".to_vec());
        cases.push([b"250 ".as_slice(), &[0xFF; 2042], b"\r\n"].concat());
        // Some lines without the enhanced code, one of them at the line limit.
        cases.push([b"250-2.0.0 ok\r\n250 ".as_slice(), &[b'x'; 2042], b"\r\n"].concat());
        for wire in cases {
            let parsed = parse_all(&wire);
            let [Ok(reply)] = parsed.as_slice() else {
                panic!("{wire:?} parses as {parsed:?}");
            };
            let again = reply.to_bytes();
            assert!(again.len() <= wire.len(), "{again:?}");
            assert_eq!(parse_all(&again), vec![Ok(reply.clone())]);
            let rebuilt = Reply::new(
                reply.code().value(),
                reply.enhanced(),
                reply.lines().to_vec(),
            );
            assert!(rebuilt.is_ok() || reply.lines().iter().any(|l| l.len() > MAX_REPLY_TEXT));
        }
        let parsed = parse_all(b"250 a\0b\xff\xfe\tc\xc3\xa9\r\n");
        let [Ok(reply)] = parsed.as_slice() else {
            panic!("not parsed: {parsed:?}");
        };
        assert_eq!(reply.lines(), ["a?b???c\u{e9}"]);
        let parsed = parse_all(b"250-2.0.0 a\r\n250 b\r\n");
        let [Ok(reply)] = parsed.as_slice() else {
            panic!("not parsed: {parsed:?}");
        };
        assert_eq!(reply.enhanced(), None);
        assert_eq!(reply.lines(), ["2.0.0 a", "b"]);
    }

    #[test]
    fn round_trip() {
        let r = Reply::fixed(451, (4, 3, 0), "Error: queue file write error");
        let parsed = parse_all(&r.to_bytes());
        assert_eq!(parsed, vec![Ok(r)]);
    }
}
