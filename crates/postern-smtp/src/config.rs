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
    /// Time for the whole content of one DATA phase or one BDAT chunk (server), or for the final reply after the
    /// content (client). Default 600 s (RFC 5321 4.5.3.2.6 DATA termination: 10 minutes).
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

    /// The configuration with every limit raised to its RFC 5321 minimum where set lower, and the host name
    /// and banner stripped of control characters.
    pub fn validated(mut self) -> Self {
        self.max_command_line = self.max_command_line.max(MIN_COMMAND_LINE);
        self.max_recipients = self.max_recipients.max(MIN_RECIPIENTS);
        self.data.max_line_length = self.data.max_line_length.max(MIN_TEXT_LINE);
        self.input_buffer = self.input_buffer.max(2 * self.max_command_line);
        self.max_errors = self.max_errors.max(1);
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
