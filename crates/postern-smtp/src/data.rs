//! DATA content codec (RFC 5321 sections 4.1.1.4, 4.5.2): server-side end detection and dot-unstuffing,
//! client-side dot-stuffing and line ending normalisation.

/// What to do with a bare CR or bare LF in DATA content (Postfix 3.9 `smtpd_forbid_bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BareLineEndings {
    /// Default. A bare LF ends a content line and is re-emitted as CRLF; a stray bare CR never reaches the
    /// output as a bare CR (it is emitted as CRLF too). Neither ever ends the data.
    #[default]
    Normalize,
    /// The message is refused after its real end if it contained a bare CR or bare LF.
    Reject,
}

/// Limits applied while receiving DATA content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataLimits {
    /// Largest message accepted, in octets of unstuffed content; past it nothing more is appended to the output
    /// but the receiver keeps scanning for the end so the session stays in sync. Default 10 240 000 (Postfix).
    pub max_message_size: u64,
    /// Longest text line, CRLF included (RFC 5321 4.5.3.1.6: at least 1000). Default 1000.
    pub max_line_length: usize,
    /// Bare CR / LF handling.
    pub bare_line_endings: BareLineEndings,
}

impl Default for DataLimits {
    fn default() -> Self {
        Self { max_message_size: 10_240_000, max_line_length: 1000, bare_line_endings: BareLineEndings::Normalize }
    }
}

/// Incremental DATA receiver: end detection (only CRLF "." CRLF, after a CRLF-terminated line, RFC 5321 4.1.1.4),
/// dot-unstuffing (RFC 5321 4.5.2), bare line ending policy, limits. Works on arbitrarily split input.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    limits: DataLimits,
}

impl DataReceiver {
    /// A receiver for one message, positioned right after the 354 reply.
    pub fn new(limits: DataLimits) -> Self {
        Self { limits }
    }

    /// Consume DATA content bytes (those after the 354 reply). Appends unstuffed content, with CRLF line endings,
    /// to `out`. Never consumes bytes past the end-of-data line: `step.consumed` tells how many were used, the
    /// rest belongs to the next command.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataStep {
        let _ = (input, out, &self.limits);
        todo!()
    }
}

/// Result of one `feed` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataStep {
    /// Bytes of `input` consumed.
    pub consumed: usize,
    /// `Some` once the end-of-data line has been consumed.
    pub end: Option<DataSummary>,
}

/// What the receiver saw in the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DataSummary {
    /// Octets of unstuffed content seen (counted even past the limit).
    pub size: u64,
    /// `size` exceeded `max_message_size` (the content in `out` is truncated): reply 552 5.3.4.
    pub too_large: bool,
    /// A line longer than `max_line_length` was seen.
    pub line_too_long: bool,
    /// A bare LF was seen.
    pub bare_lf: bool,
    /// A bare CR was seen.
    pub bare_cr: bool,
    /// A NUL octet was seen.
    pub nul: bool,
}

impl DataSummary {
    /// Whether the bare-line-ending policy refuses this message (Reject mode and a bare CR or LF seen).
    pub fn rejected_by_policy(&self, mode: BareLineEndings) -> bool {
        mode == BareLineEndings::Reject && (self.bare_cr || self.bare_lf)
    }
}

/// Client side (RFC 5321 4.5.2): streaming dot-stuffer. Normalises every bare CR and bare LF to CRLF (the client
/// never emits a bare CR or LF), doubles a leading "." on every line, and `finish` ends the content with CRLF (if the
/// message did not end with one) followed by ".\r\n". Works on arbitrarily split input.
#[derive(Debug, Clone, Default)]
pub struct DotStuffer {
    _state: u8,
}

impl DotStuffer {
    /// A stuffer positioned at the start of the message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stuff the next chunk of the message into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let _ = (chunk, out);
        todo!()
    }

    /// End the content: CRLF if missing, then the end-of-data line ".\r\n".
    pub fn finish(self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}

/// One-shot convenience over `DotStuffer`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut s = DotStuffer::new();
    s.feed(message, &mut out);
    s.finish(&mut out);
    out
}

/// For BDAT (RFC 3030, no dot-stuffing): normalise bare CR / LF to CRLF.
pub fn normalize_line_endings(message: &[u8]) -> Vec<u8> {
    let _ = message;
    todo!()
}
