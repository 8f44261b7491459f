//! Session settings and limits (RFC 5321 section 4.5.3: the minimums below are enforced by
//! [`ServerConfig::validated`] and [`ClientConfig::validated`]).

use std::time::Duration;

use crate::data::DataLimits;

/// RFC 5321 4.5.3.1.4: a command line is at least 512 octets long, CRLF included.
pub const MIN_COMMAND_LINE: usize = 512;
/// RFC 5321 4.5.3.1.6: a text line is at least 1000 octets long, CRLF included.
pub const MIN_TEXT_LINE: usize = 1000;
/// RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients.
pub const MIN_RECIPIENTS: usize = 100;
/// Longest duration a session setting can hold (timeouts, greet pause, session time limit): 366 days. Longer
/// values are lowered to it by [`ServerConfig::validated`], so that no deadline computation can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// STARTTLS offer on the server (DESIGN: server TLS mode; Postfix `smtpd_tls_security_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartTlsPolicy {
    /// STARTTLS is neither advertised nor accepted (Postfix `none`).
    Disabled,
    /// Default. STARTTLS is advertised; plaintext mail is accepted too (Postfix `may`).
    #[default]
    Offer,
    /// STARTTLS is advertised and required: before TLS, every command but EHLO, HELO, STARTTLS, NOOP, QUIT and
    /// HELP gets `530 5.7.0 Must issue a STARTTLS command first` (RFC 3207 section 4; Postfix `encrypt`).
    Require,
}

/// What a session does with plaintext that arrived after the STARTTLS command line (server) or after the `220`
/// reply to STARTTLS (client), before the handshake. It is never processed (RFC 3207 section 4, CVE-2011-0411).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AfterStartTls {
    /// Default. Throw the bytes away, count them (`StartTls { discarded }` event) and go on with the handshake,
    /// as Postfix does.
    #[default]
    Discard,
    /// Close the session instead (server: `554 5.5.0 Error: SMTP protocol synchronization`; client: abort).
    Close,
}

/// Deadlines. Each covers a whole phase and is never extended by partial input (Postfix
/// `smtpd_per_record_deadline`): a peer trickling one byte a second is cut off all the same.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Time for the peer to send one whole command line (server) or one whole reply (client). Default 300 s
    /// (RFC 5321 4.5.3.2.7 server timeout; Postfix `smtpd_timeout`).
    pub command: Duration,
    /// Time for the whole content of one message (server: from the `354` reply to DATA, or from the first BDAT
    /// chunk, to the end of the content, BDAT command lines between chunks included), or for the final reply
    /// after the content (client). Default 600 s (RFC 5321 4.5.3.2.6 DATA termination: 10 minutes).
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            data: Duration::from_secs(600),
        }
    }
}

/// Limits that replace the normal ones while the server is under stress, that is while its connection slots are
/// nearly all taken ([`ServerSession::set_stress`](crate::ServerSession::set_stress)): idle and misbehaving
/// clients then give their slot back quickly, so that honest clients get one. Postfix's `stress` parameter,
/// with its defaults: `smtpd_timeout = ${stress?{10}:{300}}s`, `smtpd_hard_error_limit = ${stress?{1}:{20}}`,
/// `smtpd_junk_command_limit = ${stress?{1}:{100}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StressLimits {
    /// Time for one whole command line under stress (never longer than [`Timeouts::command`]). Default 10 s.
    pub command_timeout: Duration,
    /// Negative replies tolerated under stress (never more than [`ServerConfig::max_errors`]). Default 1.
    pub max_errors: u32,
    /// Junk commands tolerated under stress (never more than [`ServerConfig::max_junk_commands`]). Default 1.
    pub max_junk_commands: u32,
}

impl Default for StressLimits {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(10),
            max_errors: 1,
            max_junk_commands: 1,
        }
    }
}

/// Default [`ServerConfig::greet_pause`]: long enough to catch a client that writes as soon as it is connected
/// (its bytes arrive with, or within a few milliseconds of, the end of the TCP handshake), short enough that an
/// honest client, which waits for the greeting anyway, hardly notices (docs/benchmarks.md measures it).
pub const DEFAULT_GREET_PAUSE: Duration = Duration::from_millis(100);

/// Server session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The server's host name, used in the greeting, EHLO and 421 replies. Default `localhost`.
    pub hostname: String,
    /// Greeting text after the host name. Default `ESMTP`.
    pub banner: String,
    /// STARTTLS offer. Default [`StartTlsPolicy::Offer`].
    pub starttls: StartTlsPolicy,
    /// Whether a TLS handshake can be done now (certificates loaded). When false, STARTTLS is not advertised
    /// and gets `454 4.7.0 TLS not available due to temporary reason`. Default true.
    pub tls_available: bool,
    /// Plaintext pipelined after STARTTLS. Default [`AfterStartTls::Discard`].
    pub after_starttls: AfterStartTls,
    /// Longest command line, CRLF included (at least 512). Default 2048 (Postfix `line_length_limit`).
    pub max_command_line: usize,
    /// Recipients per transaction (at least 100); past it `452 4.5.3 Error: too many recipients`. Default 1000
    /// (Postfix `smtpd_recipient_limit`).
    pub max_recipients: usize,
    /// DATA content limits: message size (also advertised as SIZE and enforced on BDAT), text line length,
    /// bare CR / LF handling. Default [`DataLimits::default`].
    pub data: DataLimits,
    /// Negative replies tolerated before `421 4.7.0 Error: too many errors` and close. Default 20 (Postfix
    /// `smtpd_hard_error_limit`).
    pub max_errors: u32,
    /// Input buffered while the application decides (at least twice the command line). Default 65536.
    pub input_buffer: usize,
    /// Deadlines. Default [`Timeouts::default`].
    pub timeouts: Timeouts,
    /// How long the greeting is held back while the connection is watched (sendmail `greet_pause`, Postfix
    /// `postscreen_greet_wait`). A client that talks during the pause is answered `554 5.5.0 Error: SMTP protocol
    /// synchronization` and closed without ever seeing the `220` (with `forbid_unauth_pipelining`; without it,
    /// its commands wait until the greeting is sent). Zero greets at once. Default [`DEFAULT_GREET_PAUSE`].
    pub greet_pause: Duration,
    /// NOOP, RSET, HELP and VRFY commands tolerated in a session; the next one is answered `421 4.7.0 <host>
    /// Error: too many junk commands` and the session is closed. The count starts again after each accepted
    /// message. Default 100 (Postfix `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Longest session: once it has lasted this long, the session is closed with `421 4.7.0 <host> Error:
    /// session time limit exceeded` as soon as it waits for the client (an answer the application is deciding
    /// is never cut short). Zero: no limit. Default 1 hour.
    pub session_time_limit: Duration,
    /// Limits applied instead while the server is under stress. Default [`StressLimits::default`].
    pub stress: StressLimits,
    /// Advertise PIPELINING (RFC 2920). Default true.
    pub pipelining: bool,
    /// Answer a client that talks before the greeting, after a command that ends a pipelined group, or
    /// pipelines without PIPELINING with `554 5.5.0 Error: SMTP protocol synchronization` and close (Postfix 3.9
    /// `smtpd_forbid_unauth_pipelining`). Default true.
    pub forbid_unauth_pipelining: bool,
    /// Advertise CHUNKING and accept BDAT (RFC 3030). Default true.
    pub chunking: bool,
    /// Advertise BINARYMIME (RFC 3030; needs `chunking`). Default false.
    pub binary_mime: bool,
    /// Advertise SMTPUTF8 (RFC 6531). Default true.
    pub smtputf8: bool,
    /// Advertise DSN (RFC 3461). Default true.
    pub dsn: bool,
    /// Advertise REQUIRETLS (RFC 8689), only ever on a TLS session. Default true.
    pub requiretls: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            banner: "ESMTP".into(),
            starttls: StartTlsPolicy::Offer,
            tls_available: true,
            after_starttls: AfterStartTls::Discard,
            max_command_line: 2048,
            max_recipients: 1000,
            data: DataLimits::default(),
            max_errors: 20,
            input_buffer: 65536,
            timeouts: Timeouts::default(),
            greet_pause: DEFAULT_GREET_PAUSE,
            max_junk_commands: 100,
            session_time_limit: Duration::from_secs(3600),
            stress: StressLimits::default(),
            pipelining: true,
            forbid_unauth_pipelining: true,
            chunking: true,
            binary_mime: false,
            smtputf8: true,
            dsn: true,
            requiretls: true,
        }
    }
}

impl ServerConfig {
    /// A default configuration with this host name.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            ..Self::default()
        }
    }

    /// The configuration with every limit raised to its RFC 5321 minimum where set lower, every duration
    /// lowered to [`MAX_DURATION`] where set higher, the stress limits no looser than the normal ones, and the
    /// host name and banner stripped of control characters.
    pub fn validated(mut self) -> Self {
        for d in [
            &mut self.timeouts.command,
            &mut self.timeouts.data,
            &mut self.greet_pause,
            &mut self.session_time_limit,
            &mut self.stress.command_timeout,
        ] {
            *d = (*d).min(MAX_DURATION);
        }
        self.max_command_line = self.max_command_line.max(MIN_COMMAND_LINE);
        self.max_recipients = self.max_recipients.max(MIN_RECIPIENTS);
        self.data.max_line_length = self.data.max_line_length.max(MIN_TEXT_LINE);
        self.input_buffer = self.input_buffer.max(2 * self.max_command_line);
        self.max_errors = self.max_errors.max(1);
        // Stress only ever tightens the limits.
        self.stress.command_timeout = self.stress.command_timeout.min(self.timeouts.command);
        self.stress.max_errors = self.stress.max_errors.clamp(1, self.max_errors);
        self.stress.max_junk_commands = self.stress.max_junk_commands.min(self.max_junk_commands);
        self.hostname.retain(|c| !c.is_control() && c != ' ');
        if self.hostname.is_empty() {
            self.hostname = "localhost".into();
        }
        self.banner.retain(|c| !c.is_control());
        self
    }
}

/// Client session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Our host name, sent with EHLO / HELO. Default `localhost`.
    pub hostname: String,
    /// Bytes received after the `220` reply to STARTTLS. Default [`AfterStartTls::Discard`].
    pub after_starttls: AfterStartTls,
    /// Use BDAT when the server offers CHUNKING (RFC 3030) instead of DATA. Default false.
    pub prefer_chunking: bool,
    /// Refuse [`send_mail`](crate::ClientSession::send_mail) unless TLS is active
    /// ([`SendError::TlsRequired`](crate::SendError::TlsRequired)): a last line of defence under a policy that
    /// requires TLS, whatever the caller does at the decision point. Default false.
    pub require_tls: bool,
    /// Pipeline MAIL, RCPT and DATA when the server offers PIPELINING (RFC 2920). Default true.
    pub pipelining: bool,
    /// Longest reply line accepted (at least 512). Default 2048.
    pub max_reply_line: usize,
    /// Most lines in one reply. Default 256.
    pub max_reply_lines: usize,
    /// Deadlines: `command` for each reply, `data` for the reply after the message content. RFC 5321 4.5.3.2
    /// values by default (300 s and 600 s).
    pub timeouts: Timeouts,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            after_starttls: AfterStartTls::Discard,
            prefer_chunking: false,
            require_tls: false,
            pipelining: true,
            max_reply_line: 2048,
            max_reply_lines: 256,
            timeouts: Timeouts::default(),
        }
    }
}

impl ClientConfig {
    /// A default configuration with this host name.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            ..Self::default()
        }
    }

    /// The configuration with limits raised to their minimums.
    pub fn validated(mut self) -> Self {
        self.max_reply_line = self.max_reply_line.max(512);
        self.max_reply_lines = self.max_reply_lines.max(1);
        self.hostname.retain(|c| !c.is_control() && c != ' ');
        if self.hostname.is_empty() {
            self.hostname = "localhost".into();
        }
        self
    }
}
