//! DATA content codec: the server-side receiver (end-of-data detection, dot-unstuffing, bare line ending policy,
//! limits) and the client-side dot-stuffer.
//!
//! # End of data (RFC 5321 section 4.1.1.4)
//!
//! > The mail data are terminated by a line containing only a period, that is, the character sequence
//! > "\<CRLF>.\<CRLF>", where the first \<CRLF> is actually the terminator of the previous line.
//!
//! [`DataReceiver`] recognises exactly that, and every occurrence of it: a line holding only "." and ended by
//! CRLF, that follows a line ended by CRLF (or that is the first line of the content, the DATA command's own CRLF
//! being the previous one). Whatever octet comes before that first CRLF does not matter: in `text\r\r\n.\r\n`
//! and `text\n\r\n.\r\n` the sequence CRLF "." CRLF is there, so the data ends; the bare CR or bare LF before
//! it is content, handled by [`BareLineEndings`]. Every other end-of-data lookalike never ends the data: a bare
//! LF, a bare CR or a NUL in place of one of the CRLFs, or around the dot (`\n.\n`, `\r.\r`, `\n.\r\n`,
//! `\r\n.\n`, `\r\n.\r`, `\r\n.\r\r\n`, `\r\n\0.\r\n`, ...). This is the defence against SMTP smuggling
//! (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766), where a sender hides a second message behind a lookalike
//! that another server would honour: the receiver ends the data exactly where RFC 5321 says, so any conforming
//! server agrees with it on where the message ends, and the bare line endings of a lookalike never reach the
//! next hop (they are re-emitted as CRLF, or the message is refused).
//!
//! # Transparency (RFC 5321 section 4.5.2)
//!
//! > Before sending a line of mail text, the SMTP client checks the first character of the line. If it is a
//! > period, one additional period is inserted at the beginning of the line. [...] If the first character is a
//! > period and there are other characters on the line, the first character is deleted.
//!
//! [`DotStuffer`] does the first half, [`DataReceiver`] the second.
//!
//! # Bare line endings
//!
//! The content handed to the application only ever has CRLF line endings. A bare LF or bare CR in the received
//! content ends a content line and is re-emitted as CRLF; the next line is unstuffed like any other, but it can
//! never be the end-of-data line. [`BareLineEndings`] says whether such a message is accepted
//! ([`BareLineEndings::Normalize`]) or refused once its real end has been read ([`BareLineEndings::Reject`]); the
//! receiver produces the same output and summary in both modes, and [`DataSummary::rejected_by_policy`] applies
//! the mode.
//!
//! ```
//! use postern_smtp::data::{DataLimits, DataReceiver, dot_stuff};
//!
//! let wire = dot_stuff(b"Subject: hi\r\n\r\n.leading dot\r\nbare\nLF");
//! assert_eq!(wire, b"Subject: hi\r\n\r\n..leading dot\r\nbare\r\nLF\r\n.\r\n");
//!
//! // The bytes after the end-of-data line belong to the next command.
//! let mut input = wire.clone();
//! input.extend_from_slice(b"QUIT\r\n");
//! let mut rx = DataReceiver::new(DataLimits::default());
//! let mut content = Vec::new();
//! let step = rx.feed(&input, &mut content);
//! assert_eq!(step.consumed, wire.len());
//! assert!(step.end.is_some());
//! assert_eq!(content, b"Subject: hi\r\n\r\n.leading dot\r\nbare\r\nLF\r\n");
//! ```

use std::sync::OnceLock;

use memchr::{memchr2, memchr3, memmem, memrchr};

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const CRLF: &[u8] = b"\r\n";
/// Octets per block of the fast path ([`DataReceiver::skip_plain`]).
const BLOCK: usize = 64;

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
    /// but the receiver keeps scanning for the end so the session stays in sync. Default 10 240 000 (Postfix
    /// `message_size_limit`).
    pub max_message_size: u64,
    /// Longest text line, CRLF included (RFC 5321 4.5.3.1.6: at least 1000). Default 1000, the RFC 5321
    /// minimum; a longer line only sets [`DataSummary::line_too_long`], the server decides what to do with it.
    pub max_line_length: usize,
    /// Bare CR / LF handling. Default [`BareLineEndings::Normalize`].
    pub bare_line_endings: BareLineEndings,
}

impl Default for DataLimits {
    fn default() -> Self {
        Self {
            max_message_size: 10_240_000,
            max_line_length: 1000,
            bare_line_endings: BareLineEndings::Normalize,
        }
    }
}

/// Where the receiver stands in the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line. `hard`: the previous line ended with CRLF (or this is the first line), so this line
    /// may be the end-of-data line. After a bare CR or bare LF it is `false`; the next CRLF makes it `true` again,
    /// even when it ends an empty line (RFC 5321 4.1.1.4: every CRLF "." CRLF ends the data).
    LineStart { hard: bool },
    /// Read "." at the start of a hard line (the dot is not emitted: it is the end marker or a stuffed dot).
    Dot,
    /// Read ".\r" at the start of a hard line.
    DotCr,
    /// Inside a line.
    Mid,
    /// Read a CR that is not yet known to be part of a CRLF (not emitted yet).
    Cr,
    /// The end-of-data line has been consumed.
    Done,
}

/// Incremental DATA receiver: end detection (only CRLF "." CRLF, after a CRLF-terminated line, RFC 5321 4.1.1.4),
/// dot-unstuffing (RFC 5321 4.5.2), bare line ending policy, limits. Works on arbitrarily split input.
///
/// The receiver holds no buffer of its own: it keeps a few bytes of state between calls, so memory use is
/// bounded by what the caller appends to `out`, itself bounded by [`DataLimits::max_message_size`].
#[derive(Debug, Clone)]
pub struct DataReceiver {
    limits: DataLimits,
    state: State,
    /// Octets of the current line emitted so far (unstuffed, line ending excluded).
    line_len: usize,
    summary: DataSummary,
}

impl DataReceiver {
    /// A receiver for one message, positioned right after the 354 reply.
    pub fn new(limits: DataLimits) -> Self {
        Self {
            limits,
            state: State::LineStart { hard: true },
            line_len: 0,
            summary: DataSummary::default(),
        }
    }

    /// The limits this receiver applies.
    pub fn limits(&self) -> &DataLimits {
        &self.limits
    }

    /// What has been seen so far (final once [`DataReceiver::is_done`]). Lets a server notice an oversized
    /// message early; the flags of a line are set when the line ends.
    pub fn summary(&self) -> DataSummary {
        self.summary
    }

    /// Whether the end-of-data line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume DATA content bytes (those after the 354 reply). Appends unstuffed content, with CRLF line endings,
    /// to `out`. Never consumes bytes past the end-of-data line: `step.consumed` tells how many were used, the
    /// rest belongs to the next command.
    ///
    /// Once the end has been reached, further calls consume nothing and return the same summary.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataStep {
        self.run(input, out)
    }

    /// Zero-copy form of [`DataReceiver::feed`]: the same state machine, limits and summary, but instead of
    /// appending the unstuffed content to a buffer it hands it to `content` as a sequence of spans, in order.
    /// Each span is a sub-slice of `input` or a static `"\r\n"` (a bare line ending re-emitted as CRLF, or
    /// the CRLF of a line whose CR arrived in an earlier call; `"\r"` alone if the size limit cuts it in two).
    /// The concatenation of the spans of every call is exactly what `feed` would have appended to `out`, for
    /// any split of the input. A clean message costs no copy at all: its spans are whole runs of lines between
    /// stuffed dots, so the caller can write them out with vectored I/O or hash them in place.
    ///
    /// ```
    /// use postern_smtp::data::{DataLimits, DataReceiver};
    ///
    /// let wire = b"Subject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
    /// let mut rx = DataReceiver::new(DataLimits::default());
    /// let mut spans: Vec<&[u8]> = Vec::new();
    /// let step = rx.feed_spans(wire, |span| spans.push(span));
    /// assert_eq!(step.consumed, wire.len() - b"QUIT\r\n".len());
    /// assert!(step.end.is_some());
    /// // Two spans: the dot that stuffed the third line is left out between them.
    /// assert_eq!(spans, [&b"Subject: hi\r\n\r\n"[..], b".leading dot\r\n"]);
    /// ```
    pub fn feed_spans<'a>(&mut self, input: &'a [u8], content: impl FnMut(&'a [u8])) -> DataStep {
        self.run(input, &mut Spans(content))
    }

    /// The state machine shared by `feed` and `feed_spans`.
    fn run<'a>(&mut self, input: &'a [u8], out: &mut impl Sink<'a>) -> DataStep {
        let mut dot_lines = DotLines::default();
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::LineStart { hard } => {
                    if input[i] == b'.' {
                        // RFC 5321 4.5.2: the leading period of a line is deleted. After CRLF it may also be
                        // the end-of-data marker, which `Dot` decides.
                        i += 1;
                        self.state = if hard { State::Dot } else { State::Mid };
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => {
                    if input[i] == CR {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // A stuffed dot: already dropped, the rest of the line is content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == LF {
                        // RFC 5321 4.1.1.4: CRLF "." CRLF, the end of the mail data.
                        i += 1;
                        self.state = State::Done;
                    } else {
                        // "." then a bare CR: not the end (CVE-2023-51764 lookalike `\r\n.\r`).
                        self.bare_line_end(out, true);
                    }
                }
                State::Cr => {
                    if input[i] == LF {
                        i += 1;
                        self.emit(out, CRLF);
                        self.end_line();
                        self.state = State::LineStart { hard: true };
                    } else {
                        self.bare_line_end(out, true);
                    }
                }
                State::Mid => i = self.scan_line(input, i, out, &mut dot_lines),
            }
        }
        DataStep {
            consumed: i,
            end: self.is_done().then_some(self.summary),
        }
    }

    /// Scan content from `input[start..]` in state `Mid`, copying whole spans; returns the new position.
    fn scan_line<'a>(
        &mut self,
        input: &'a [u8],
        start: usize,
        out: &mut impl Sink<'a>,
        dot_lines: &mut DotLines,
    ) -> usize {
        let mut i = start;
        loop {
            let (plain_end, at_line_start) = self.skip_plain(input, i, dot_lines);
            i = plain_end;
            if at_line_start {
                // The plain run ended with CRLF: the next line may start with "." (or be the end marker).
                self.emit(out, &input[start..i]);
                self.state = State::LineStart { hard: true };
                return i;
            }
            // One exact step: up to and including the next CR, LF or NUL.
            let Some(k) = memchr3(CR, LF, 0, &input[i..]) else {
                self.line_len = self.line_len.saturating_add(input.len() - i);
                self.emit(out, &input[start..]);
                return input.len();
            };
            let p = i + k;
            self.line_len = self.line_len.saturating_add(k);
            match input[p] {
                0 => {
                    self.summary.nul = true;
                    self.line_len = self.line_len.saturating_add(1);
                    i = p + 1;
                }
                CR => match input.get(p + 1) {
                    Some(&LF) => {
                        self.end_line();
                        i = p + 2;
                        match input.get(i) {
                            // Keep copying: the next line starts with an ordinary octet.
                            Some(&b) if b != b'.' => {}
                            _ => {
                                self.emit(out, &input[start..i]);
                                self.state = State::LineStart { hard: true };
                                return i;
                            }
                        }
                    }
                    _ => {
                        // CR at the end of the input or a bare CR: `Cr` decides with the next octet.
                        self.emit(out, &input[start..p]);
                        self.state = State::Cr;
                        return p + 1;
                    }
                },
                _ => {
                    // A bare LF (a CR before it would have been found first).
                    self.emit(out, &input[start..p]);
                    self.bare_line_end(out, false);
                    return p + 1;
                }
            }
        }
    }

    /// Fast path: skip `BLOCK`-octet blocks of "plain" content from `input[start..]` (in state `Mid`), where nothing
    /// but copying is needed: every CR is followed by LF and every LF preceded by CR, no line that starts with "."
    /// (found ahead by `dot_lines`), and no line that could exceed the line length limit (NULs are only counted).
    /// The test of a block is a branch-free loop that the compiler turns into SIMD compares, so ordinary text costs
    /// a fraction of a cycle per octet instead of a search call per line.
    ///
    /// Returns the end of the plain run, never between a CR and its LF, and whether that end is the start of a
    /// line (the run ended with CRLF); `line_len` is exact at that position.
    fn skip_plain(
        &mut self,
        input: &[u8],
        start: usize,
        dot_lines: &mut DotLines,
    ) -> (usize, bool) {
        // `Mid` never follows an undecided CR, so an LF here is the exact path's business.
        if input.len() < start + BLOCK + 1 || input[start] == LF {
            return (start, false);
        }
        // Blocks stop short of the next "\n." pair: the window ends at `limit`.
        let limit = dot_lines.next(input, start).map_or(input.len(), |d| d + 1);
        let max_line = self.limits.max_line_length;
        // The current line started at or after `bound` (exact at first: `line_len` octets ago). Wrapping
        // arithmetic: the line may have started in an earlier call, "before" `input[0]`.
        let mut bound = start.wrapping_sub(self.line_len);
        let mut pos = start;
        let mut nul = false;
        while pos + BLOCK < limit {
            let (bad_pair, has_lf, has_nul) = classify(&input[pos..=pos + BLOCK]);
            // An LF of this block is in `input[pos + 1..=pos + BLOCK]`: the line it ends is at most
            // `pos + BLOCK + 1 - bound` octets long, CRLF included. Kept free of branches: whether a block holds an
            // LF is unpredictable.
            let may_be_long = has_lf & ((pos + BLOCK + 1).wrapping_sub(bound) > max_line);
            if bad_pair | may_be_long {
                break;
            }
            nul |= has_nul;
            // The next line starts after an LF of this block.
            bound = if has_lf { pos + 1 } else { bound };
            pos += BLOCK;
        }
        if pos == start {
            return (start, false);
        }
        // Do not stop between a CR and its LF (the block check proved the LF follows).
        let mut end = pos;
        if input[end - 1] == CR {
            end -= 1;
        }
        // A NUL changes nothing but the summary. The blocks cover `input[start..pos]`, and `input[end..pos]` is at most a CR.
        self.summary.nul |= nul;
        self.line_len = match memrchr(LF, &input[start..end]) {
            Some(p) => end - (start + p + 1),
            None => self.line_len.saturating_add(end - start),
        };
        (end, input[end - 1] == LF)
    }

    /// A bare CR (`cr`) or bare LF ended a line: emit CRLF; the next line cannot be the end-of-data line.
    fn bare_line_end<'a>(&mut self, out: &mut impl Sink<'a>, cr: bool) {
        if cr {
            self.summary.bare_cr = true;
        } else {
            self.summary.bare_lf = true;
        }
        self.emit(out, CRLF);
        self.end_line();
        self.state = State::LineStart { hard: false };
    }

    /// A line ended: check its length (RFC 5321 4.5.3.1.6, CRLF included).
    fn end_line(&mut self) {
        if self.line_len.saturating_add(2) > self.limits.max_line_length {
            self.summary.line_too_long = true;
        }
        self.line_len = 0;
    }

    /// Append content, up to the size limit; count it all.
    fn emit<'a>(&mut self, out: &mut impl Sink<'a>, bytes: &'a [u8]) {
        let room = self
            .limits
            .max_message_size
            .saturating_sub(self.summary.size);
        self.summary.size = self.summary.size.saturating_add(bytes.len() as u64);
        if bytes.len() as u64 <= room {
            out.put(bytes);
        } else {
            // `room < bytes.len()`, so it fits in usize.
            out.put(&bytes[..room as usize]);
            self.summary.too_large = true;
        }
    }
}

/// Where the receiver puts content: a buffer (`feed`) or a span consumer (`feed_spans`).
trait Sink<'a> {
    fn put(&mut self, bytes: &'a [u8]);
}

impl<'a> Sink<'a> for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &'a [u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The span consumer of [`DataReceiver::feed_spans`].
struct Spans<F>(F);

impl<'a, F: FnMut(&'a [u8])> Sink<'a> for Spans<F> {
    #[inline]
    fn put(&mut self, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            (self.0)(bytes);
        }
    }
}

/// Look at the `BLOCK` octet pairs `(w[j], w[j + 1])` of a `BLOCK + 1`-octet window: the first result says
/// whether one of them is a CR not followed by LF or an LF not preceded by CR, the second whether one of
/// `w[1..]` is an LF, the third whether one of `w[..BLOCK]` is a NUL. Written without branches so that it vectorises.
#[inline(always)]
fn classify(w: &[u8]) -> (bool, bool, bool) {
    let (a, b) = (&w[..BLOCK], &w[1..=BLOCK]);
    let mut bad = 0u8;
    let mut lf = 0u8;
    let mut nul = 0u8;
    for (&x, &y) in a.iter().zip(b) {
        let y_lf = u8::from(y == LF);
        bad |= u8::from(x == CR) ^ y_lf;
        lf |= y_lf;
        nul |= u8::from(x == 0);
    }
    (bad != 0, lf != 0, nul != 0)
}

/// Where the next "\n." pair of one `feed` input is: a line that may need unstuffing or be the end marker.
/// Searched lazily with `memmem` (as fast as the memory allows) and remembered, so that the input is searched
/// once in all however often the fast path starts again.
#[derive(Debug, Default)]
struct DotLines {
    /// `input[searched_from..]` was searched and its first pair is at `found` (`None`: there is none).
    searched_from: Option<usize>,
    found: Option<usize>,
}

impl DotLines {
    /// Position of the LF of the first "\n." pair at or after `from`.
    fn next(&mut self, input: &[u8], from: usize) -> Option<usize> {
        let still_valid = match (self.searched_from, self.found) {
            (Some(s), Some(f)) => s <= from && from <= f,
            (Some(s), None) => s <= from,
            (None, _) => false,
        };
        if !still_valid {
            self.searched_from = Some(from);
            static FINDER: OnceLock<memmem::Finder<'static>> = OnceLock::new();
            let finder = FINDER.get_or_init(|| memmem::Finder::new(b"\n."));
            self.found = finder.find(&input[from..]).map(|k| from + k);
        }
        self.found
    }
}

/// Result of one `feed` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[derive(Debug, Clone)]
pub struct DotStuffer {
    inner: LineEndings<true>,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer positioned at the start of the message.
    pub fn new() -> Self {
        Self {
            inner: LineEndings::new(),
        }
    }

    /// Stuff the next chunk of the message into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.inner.feed(chunk, out);
    }

    /// End the content: CRLF if missing, then the end-of-data line ".\r\n" (RFC 5321 4.1.1.4).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.inner.finish(out);
        if !self.inner.line_start {
            out.extend_from_slice(CRLF);
        }
        out.extend_from_slice(b".\r\n");
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
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut n = LineEndings::<false>::new();
    n.feed(message, &mut out);
    n.finish(&mut out);
    out
}

/// Line ending normaliser, dot-stuffing too when `STUFF`.
#[derive(Debug, Clone)]
struct LineEndings<const STUFF: bool> {
    /// At the start of a line (nothing of the message yet, or the last output was CRLF).
    line_start: bool,
    /// The previous chunk ended with a CR whose successor is not known yet (not emitted yet).
    pending_cr: bool,
}

impl<const STUFF: bool> LineEndings<STUFF> {
    fn new() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        let mut i = 0;
        if self.pending_cr {
            // CRLF, or a bare CR that becomes CRLF.
            self.pending_cr = false;
            out.extend_from_slice(CRLF);
            self.line_start = true;
            if chunk[0] == LF {
                i = 1;
            }
        }
        // `run` is the start of input not yet copied to `out`.
        let mut run = i;
        while i < chunk.len() {
            if self.line_start {
                self.line_start = false;
                if STUFF && chunk[i] == b'.' {
                    // RFC 5321 4.5.2: double the leading period (the original is copied with the run).
                    out.extend_from_slice(&chunk[run..i]);
                    out.push(b'.');
                    run = i;
                }
            }
            let Some(k) = memchr2(CR, LF, &chunk[i..]) else {
                break;
            };
            let p = i + k;
            self.line_start = true;
            if chunk[p] == LF {
                // A bare LF (a CR before it would have been found first).
                out.extend_from_slice(&chunk[run..p]);
                out.extend_from_slice(CRLF);
                i = p + 1;
                run = i;
            } else {
                match chunk.get(p + 1) {
                    Some(&LF) => i = p + 2,
                    Some(_) => {
                        out.extend_from_slice(&chunk[run..p]);
                        out.extend_from_slice(CRLF);
                        i = p + 1;
                        run = i;
                    }
                    None => {
                        out.extend_from_slice(&chunk[run..p]);
                        self.line_start = false;
                        self.pending_cr = true;
                        return;
                    }
                }
            }
        }
        out.extend_from_slice(&chunk[run..]);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(CRLF);
            self.line_start = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every end-of-data lookalike of the SMTP smuggling research (CVE-2023-51764/5/6).
    const LOOKALIKES: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r",
        b"\r.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n\0.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r\n.\0\r\n",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
        b"\n\r\n.\r",
    ];

    const SMUGGLED: &[u8] =
        b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n";

    fn limits(mode: BareLineEndings) -> DataLimits {
        DataLimits {
            bare_line_endings: mode,
            ..DataLimits::default()
        }
    }

    /// Feed `input` in one call.
    fn one_shot(limits: &DataLimits, input: &[u8]) -> (usize, Option<DataSummary>, Vec<u8>) {
        let mut rx = DataReceiver::new(limits.clone());
        let mut out = Vec::new();
        let step = rx.feed(input, &mut out);
        (step.consumed, step.end, out)
    }

    /// Feed `input` cut at `cuts` (positions, any order, may repeat), stopping at the end of data.
    fn chunked(
        limits: &DataLimits,
        input: &[u8],
        cuts: &[usize],
    ) -> (usize, Option<DataSummary>, Vec<u8>) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.push(input.len());
        cuts.sort_unstable();
        let mut rx = DataReceiver::new(limits.clone());
        let mut out = Vec::new();
        let mut pos = 0;
        for cut in cuts {
            let step = rx.feed(&input[pos..cut], &mut out);
            pos += step.consumed;
            if let Some(end) = step.end {
                return (pos, Some(end), out);
            }
            assert_eq!(pos, cut, "everything is consumed before the end");
        }
        (pos, None, out)
    }

    /// A byte-level model of RFC 5321 4.1.1.4 / 4.5.2 and of the bare line ending rules, written line by line
    /// without any of the receiver's machinery. Returns (consumed, end seen, unstuffed content untruncated,
    /// summary flags).
    fn model(input: &[u8], max_line: usize) -> (usize, bool, Vec<u8>, DataSummary) {
        let mut out = Vec::new();
        let mut sum = DataSummary::default();
        let mut hard = true;
        let mut pos = 0;
        loop {
            // Find the end of the line: CRLF, bare LF, or bare CR (a CR at the end of input is undecided).
            let rest = &input[pos..];
            let mut term = None;
            for (j, &b) in rest.iter().enumerate() {
                if b == b'\n' {
                    term = Some((j, 1, "lf"));
                    break;
                }
                if b == b'\r' {
                    match rest.get(j + 1) {
                        Some(b'\n') => term = Some((j, 2, "crlf")),
                        Some(_) => term = Some((j, 1, "cr")),
                        None => term = Some((j, usize::MAX, "pending")),
                    }
                    break;
                }
            }
            let (len, tlen, kind) = term.unwrap_or((rest.len(), usize::MAX, "none"));
            let line = &rest[..len];
            if tlen == usize::MAX {
                // Incomplete line: what has been emitted so far.
                let content = line.strip_prefix(b".").unwrap_or(line);
                sum.nul |= content.contains(&0);
                out.extend_from_slice(content);
                return (input.len(), false, out, sum);
            }
            if hard && line == b"." && kind == "crlf" {
                return (pos + 3, true, out, sum);
            }
            let content = line.strip_prefix(b".").unwrap_or(line);
            sum.nul |= content.contains(&0);
            sum.bare_cr |= kind == "cr";
            sum.bare_lf |= kind == "lf";
            sum.line_too_long |= content.len() + 2 > max_line;
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
            // RFC 5321 4.1.1.4: whatever came before it, a CRLF makes the next line a possible end of data.
            hard = kind == "crlf";
            pos += len + tlen;
        }
    }

    #[test]
    fn lookalikes_never_end_data() {
        for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
            for lookalike in LOOKALIKES {
                let mut input = b"Subject: test\r\n\r\nhello".to_vec();
                input.extend_from_slice(lookalike);
                input.extend_from_slice(SMUGGLED);
                let (consumed, end, out) = one_shot(&limits(mode), &input);
                assert_eq!(end, None, "{lookalike:?} ended the data");
                assert_eq!(consumed, input.len());
                assert!(
                    !out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                    "bare LF in output"
                );
                // Split at every position: still no end.
                for cut in 0..=input.len() {
                    assert_eq!(
                        chunked(&limits(mode), &input, &[cut]).1,
                        None,
                        "{lookalike:?} at {cut}"
                    );
                }
                // The real end then closes exactly one message that holds the would-be smuggled commands.
                let mut full = input.clone();
                full.extend_from_slice(b".\r\nQUIT\r\n");
                let (consumed, end, out) = one_shot(&limits(mode), &full);
                let end = end.expect("the real end of data is recognised");
                assert_eq!(consumed, full.len() - b"QUIT\r\n".len());
                assert!(
                    out.windows(9).any(|w| w == b"MAIL FROM"),
                    "smuggled text stays content"
                );
                assert!(out.ends_with(b"smuggled\r\n"));
                let bare = end.bare_cr || end.bare_lf;
                assert_eq!(
                    end.rejected_by_policy(mode),
                    bare && mode == BareLineEndings::Reject
                );
            }
        }
    }

    /// `CRLF . CRLF` ends the data whatever precedes its first CRLF: a bare CR or bare LF there is content
    /// (normalised, or refused in `Reject` mode), and the bytes after the end belong to the next command.
    #[test]
    fn every_crlf_dot_crlf_ends_data() {
        for (before, cr, lf) in [
            (&b"text\r"[..], true, false),
            (b"text\n", false, true),
            (b"text\r\r", true, false),
            (b"text\r\n\r", true, false),
            (b"text\r\n.\r", true, false),
            (b"text\0", false, false),
        ] {
            for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
                let mut input = before.to_vec();
                input.extend_from_slice(b"\r\n.\r\nMAIL FROM:<a@b.example>\r\n");
                let used = input.len() - b"MAIL FROM:<a@b.example>\r\n".len();
                for cut in 0..=input.len() {
                    let (consumed, end, out) = chunked(&limits(mode), &input, &[cut]);
                    let end = end.unwrap_or_else(|| panic!("{before:?} cut at {cut}: not ended"));
                    assert_eq!(consumed, used, "{before:?} cut at {cut}");
                    assert!(out.ends_with(b"\r\n") && !out.windows(4).any(|w| w == b".\r\nM"));
                    assert_eq!((end.bare_cr, end.bare_lf), (cr, lf), "{before:?}");
                    assert_eq!(
                        end.rejected_by_policy(mode),
                        (cr || lf) && mode == BareLineEndings::Reject
                    );
                }
            }
        }
        let (_, _, out) = one_shot(&DataLimits::default(), b"text\r\r\n.\r\n");
        assert_eq!(out, b"text\r\n\r\n", "the bare CR is re-emitted as CRLF");
    }

    #[test]
    fn lookalike_flags() {
        let check = |l: &[u8], cr: bool, lf: bool, nul: bool| {
            let mut input = b"a".to_vec();
            input.extend_from_slice(l);
            input.extend_from_slice(b"b\r\n.\r\n");
            let (_, end, _) = one_shot(&DataLimits::default(), &input);
            let end = end.expect("ends");
            assert_eq!((end.bare_cr, end.bare_lf, end.nul), (cr, lf, nul), "{l:?}");
            assert!(end.rejected_by_policy(BareLineEndings::Reject) == (cr || lf));
            assert!(!end.rejected_by_policy(BareLineEndings::Normalize));
        };
        check(b"\n.\n", false, true, false);
        check(b"\r.\r", true, false, false);
        check(b"\r\n\0.\r\n", false, false, true);
        check(b"\r\n.\0\r\n", false, false, true);
        check(b"\r\n.\r\r\n", true, false, false);
        check(b"\r\n..\r\n", false, false, false);
    }

    #[test]
    fn normalizes_bare_line_endings() {
        let (_, end, out) = one_shot(&DataLimits::default(), b"a\nb\rc\r\rd\r\n\n.\n.x\r\n.\r\n");
        assert!(end.is_some());
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n\r\nx\r\n");
    }

    #[test]
    fn empty_message_and_unstuffing() {
        let (consumed, end, out) = one_shot(&DataLimits::default(), b".\r\nRSET\r\n");
        assert_eq!((consumed, out.as_slice()), (3, &b""[..]));
        assert_eq!(end.map(|e| e.size), Some(0));
        let (_, end, out) = one_shot(&DataLimits::default(), b"..\r\n...x\r\n.y.\r\n.\r\n");
        assert!(end.is_some());
        assert_eq!(out, b".\r\n..x\r\ny.\r\n");
    }

    #[test]
    fn nothing_consumed_after_the_end() {
        let mut rx = DataReceiver::new(DataLimits::default());
        let mut out = Vec::new();
        assert_eq!(rx.feed(b"x\r\n.\r", &mut out).end, None);
        let step = rx.feed(b"\nNOOP\r\n", &mut out);
        assert_eq!(step.consumed, 1);
        assert!(rx.is_done());
        let again = rx.feed(b"NOOP\r\n", &mut out);
        assert_eq!((again.consumed, again.end), (0, step.end));
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn size_limit_truncates_but_keeps_scanning() {
        let lim = DataLimits {
            max_message_size: 10,
            ..DataLimits::default()
        };
        let input = b"0123456789abcdef\r\n..more\r\n.\r\nQUIT\r\n";
        for cut in 0..input.len() {
            let (consumed, end, out) = chunked(&lim, input, &[cut]);
            let end = end.expect("end found past the limit");
            assert_eq!(consumed, input.len() - 6);
            assert_eq!(out, b"0123456789");
            assert_eq!(end.size, 25);
            assert!(end.too_large);
        }
        let (_, end, out) = one_shot(&lim, b"01234567\r\n.\r\n");
        assert_eq!((out.len(), end.map(|e| e.too_large)), (10, Some(false)));
    }

    #[test]
    fn line_length() {
        let lim = DataLimits {
            max_line_length: 10,
            ..DataLimits::default()
        };
        // 8 octets + CRLF = 10: fine; the leading stuffed dot does not count.
        let (_, end, _) = one_shot(&lim, b"12345678\r\n.12345678\r\n.\r\n");
        assert!(!end.expect("ends").line_too_long);
        let (_, end, _) = one_shot(&lim, b"123456789\r\n.\r\n");
        assert!(end.expect("ends").line_too_long);
        let (_, end, _) = one_shot(&lim, b"12345678\n123456789\r\n.\r\n");
        assert!(end.expect("ends").line_too_long);
    }

    #[test]
    fn line_length_exact_in_long_plain_text() {
        // Plain CRLF text takes the block fast path: its line length bound must be exact at every alignment, and
        // for every residue of the limit modulo the block size.
        for max in (100..100 + BLOCK).chain([1000]) {
            for pad in 0..BLOCK {
                for len in max - 2..=max + 1 {
                    let mut input = Vec::new();
                    input.extend(std::iter::repeat_n(b'p', pad));
                    input.extend_from_slice(b"\r\n");
                    for _ in 0..4 {
                        input.extend(std::iter::repeat_n(b'a', 70));
                        input.extend_from_slice(b"\r\n");
                    }
                    input.extend(std::iter::repeat_n(b'x', len - 2));
                    input.extend_from_slice(b"\r\n");
                    for _ in 0..4 {
                        input.extend(std::iter::repeat_n(b'b', 70));
                        input.extend_from_slice(b"\r\n");
                    }
                    input.extend_from_slice(b".\r\n");
                    let lim = DataLimits {
                        max_line_length: max.max(pad + 2),
                        ..DataLimits::default()
                    };
                    let (_, end, out) = one_shot(&lim, &input);
                    assert_eq!(out.len(), input.len() - 3);
                    let expected = len > lim.max_line_length;
                    assert_eq!(
                        end.map(|e| e.line_too_long),
                        Some(expected),
                        "max {max} pad {pad} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\n.y\r.z\r"), b"x\r\n..y\r\n..z\r\n.\r\n");
        assert_eq!(dot_stuff(b"\r\r\n."), b"\r\n\r\n..\r\n.\r\n");
        assert_eq!(
            normalize_line_endings(b"a\nb\r\rc\r\n\r"),
            b"a\r\nb\r\n\r\nc\r\n\r\n"
        );
        // Streaming: a CR at the end of one chunk and its LF in the next.
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for chunk in [&b"a\r"[..], b"\n.", b"b\r", b"", b"\r", b".c"] {
            s.feed(chunk, &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n\r\n..c\r\n.\r\n");
    }

    /// Bytes biased towards the octets that matter here.
    fn smtp_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\r'),
                3 => Just(b'\n'),
                3 => Just(b'.'),
                1 => Just(0u8),
                4 => Just(b'a'),
                1 => any::<u8>(),
            ],
            0..max,
        )
    }

    /// Mostly ordinary lines, long enough for the block fast path, with the odd special octet.
    fn text_lines() -> impl Strategy<Value = Vec<u8>> {
        let line = (
            prop_oneof![6 => Just(&b""[..]), 1 => Just(&b"."[..]), 1 => Just(&b".."[..])],
            0usize..160,
            prop_oneof![
                20 => Just(&b"\r\n"[..]),
                1 => Just(&b"\n"[..]),
                1 => Just(&b"\r"[..]),
                1 => Just(&b"\r\r\n"[..]),
                1 => Just(&b"\0\r\n"[..]),
                1 => Just(&b""[..]),
            ],
        );
        proptest::collection::vec(line, 0..40).prop_map(|lines| {
            let mut v = Vec::new();
            for (prefix, len, end) in lines {
                v.extend_from_slice(prefix);
                v.extend((0..len).map(|k| b'a' + (k % 26) as u8));
                v.extend_from_slice(end);
            }
            v
        })
    }

    fn any_input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![smtp_bytes(200), text_lines()]
    }

    fn any_limits() -> impl Strategy<Value = DataLimits> {
        (
            0u64..2000,
            prop_oneof![2usize..12, 60usize..200],
            any::<bool>(),
        )
            .prop_map(|(size, line, reject)| DataLimits {
                max_message_size: size * 4,
                max_line_length: line,
                bare_line_endings: if reject {
                    BareLineEndings::Reject
                } else {
                    BareLineEndings::Normalize
                },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn split_invariance(
            input in any_input(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            lim in any_limits(),
        ) {
            prop_assert_eq!(chunked(&lim, &input, &cuts), one_shot(&lim, &input));
        }

        #[test]
        fn matches_model(input in any_input(), lim in any_limits(), byte_at_a_time in any::<bool>()) {
            // One call takes the block fast path wherever it can, octet by octet never does.
            let mut rx = DataReceiver::new(lim.clone());
            let mut out = Vec::new();
            let mut consumed = 0;
            if byte_at_a_time {
                while consumed < input.len() && !rx.is_done() {
                    consumed += rx.feed(&input[consumed..=consumed], &mut out).consumed;
                }
            } else {
                consumed = rx.feed(&input, &mut out).consumed;
            }
            let end = rx.is_done().then(|| rx.summary());
            let (m_consumed, m_end, m_out, m_sum) = model(&input, lim.max_line_length);
            prop_assert_eq!(consumed, m_consumed);
            prop_assert_eq!(end.is_some(), m_end);
            let keep = m_out.len().min(usize::try_from(lim.max_message_size).unwrap_or(usize::MAX));
            prop_assert_eq!(&out[..], &m_out[..keep]);
            let sum = rx.summary();
            prop_assert_eq!(sum.size, m_out.len() as u64);
            prop_assert_eq!(sum.too_large, m_out.len() as u64 > lim.max_message_size);
            prop_assert_eq!((sum.bare_cr, sum.bare_lf, sum.nul, sum.line_too_long),
                (m_sum.bare_cr, m_sum.bare_lf, m_sum.nul, m_sum.line_too_long));
        }

        /// The zero-copy receiver hands over exactly what `feed` appends, for any split, with the same steps.
        #[test]
        fn spans_equal_feed(
            input in any_input(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            lim in any_limits(),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut copy = DataReceiver::new(lim.clone());
            let mut zero = DataReceiver::new(lim);
            let (mut out, mut joined) = (Vec::new(), Vec::new());
            let mut pos = 0;
            for cut in cuts {
                while pos < cut {
                    let a = copy.feed(&input[pos..cut], &mut out);
                    let b = zero.feed_spans(&input[pos..cut], |span| {
                        assert!(!span.is_empty());
                        joined.extend_from_slice(span);
                    });
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(&out, &joined);
                    pos += a.consumed;
                    if a.consumed == 0 {
                        break;
                    }
                }
                if copy.is_done() {
                    break;
                }
            }
            prop_assert_eq!(copy.summary(), zero.summary());
        }

        #[test]
        fn round_trip(message in any_input(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let wire = dot_stuff(&message);
            let mut expected = normalize_line_endings(&message);
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
                let (consumed, end, out) = chunked(&limits(mode), &wire, &cuts);
                prop_assert_eq!(consumed, wire.len());
                let end = end.expect("dot_stuff output ends the data");
                prop_assert_eq!(&out, &expected);
                prop_assert_eq!(end.size, expected.len() as u64);
                prop_assert!(!end.bare_cr && !end.bare_lf && !end.rejected_by_policy(mode));
            }
        }

        #[test]
        fn dot_stuff_output_is_clean(message in any_input(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let wire = dot_stuff(&message);
            for (j, &b) in wire.iter().enumerate() {
                if b == b'\r' {
                    prop_assert_eq!(wire.get(j + 1), Some(&b'\n'), "bare CR at {}", j);
                }
                if b == b'\n' {
                    prop_assert!(j > 0 && wire[j - 1] == b'\r', "bare LF at {}", j);
                }
            }
            let terminator = wire.windows(5).position(|w| w == b"\r\n.\r\n");
            prop_assert!(terminator.is_none_or(|p| p + 5 == wire.len()));
            prop_assert!(wire.ends_with(b".\r\n") && (wire.len() == 3 || wire.ends_with(b"\r\n.\r\n")));
            // Streaming gives the same bytes for any split.
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
            cuts.push(message.len());
            cuts.sort_unstable();
            let mut s = DotStuffer::new();
            let mut out = Vec::new();
            let mut pos = 0;
            for cut in cuts {
                s.feed(&message[pos..cut], &mut out);
                pos = cut;
            }
            s.finish(&mut out);
            prop_assert_eq!(out, wire);
            // And normalisation is idempotent and leaves no bare CR or LF.
            let n = normalize_line_endings(&message);
            prop_assert_eq!(normalize_line_endings(&n), n.clone());
        }
    }
}
