//! DKIM signing (RFC 6376) of the mails the relay writes itself: the SMTP TLS
//! reports, which RFC 8460 §5.3 says "MUST" be DKIM-signed by the reporting
//! domain.
//!
//! A [`DkimSigner`] holds the signing domain (`d=`), the selector (`s=`) and
//! the private key, read from a PEM file: RSA (PKCS#8 or PKCS#1, at least
//! 2048 bits: RFC 8301 §3.2 forbids keys under 1024 bits, and the signing
//! library accepts 2048 to 8192) giving `a=rsa-sha256`, or Ed25519 (PKCS#8)
//! giving `a=ed25519-sha256` (RFC 8463). [`DkimSigner::sign`] prepends a
//! `DKIM-Signature` header with `c=relaxed/relaxed`, `t=` and an `h=` list of
//! those of [`SIGNED_HEADERS`] that the message has.
//!
//! The canonicalisation ([`relaxed_header`], [`relaxed_body`]) is written here:
//! it is a few dozen lines of byte handling, and no small, well-kept crate
//! offers it apart from full mail-authentication suites (with their own DNS
//! resolver and MIME parser) that the relay would not otherwise need. The
//! cryptography is aws-lc-rs, the provider rustls already uses.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use base64::Engine as _;
//! use postern_relay::reporting::dkim::DkimSigner;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A PEM key, as `openssl genpkey -algorithm ed25519` writes it.
//! let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate()?.to_pkcs8()?;
//! let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
//! let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
//!
//! let signer = DkimSigner::from_pem("example.com", "tlsrpt", pem.as_bytes())?;
//! // The TXT record to publish at tlsrpt._domainkey.example.com:
//! assert!(signer.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
//!
//! let mail = b"From: <postmaster@example.com>\r\nSubject: hi\r\n\r\nHello\r\n";
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let signed = signer.sign(mail, now)?;
//! let text = String::from_utf8(signed)?;
//! assert!(text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;"));
//! assert!(text.contains(" h=from:subject;"));
//! assert!(text.contains(" t=1700000000;"));
//! assert!(text.ends_with("\r\n\r\nHello\r\n"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

use crate::config::{ConfigError, TlsReportingConfig, invalid};

/// The header fields signed when present, in `h=` order: those RFC 6376
/// §5.4.1 recommends that a report mail has, plus the two RFC 8460 §5.3
/// report headers.
pub const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
];

/// Longest line of the `DKIM-Signature` header's folded `b=` and `bh=`
/// values (RFC 5322 §2.1.1 recommends at most 78 characters per line).
const FOLD_WIDTH: usize = 72;

/// Why a DKIM key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkimKeyError {
    /// The key file could not be read.
    #[error("cannot read the key file: {0}")]
    Read(#[source] std::io::Error),
    /// The file holds no PEM private key.
    #[error("no PEM private key found: {0}")]
    Pem(String),
    /// The key is of a type DKIM cannot use (an EC key, say).
    #[error("unsupported key type: {0}")]
    Unsupported(&'static str),
    /// The RSA key is shorter than 2048 bits.
    #[error("RSA key too small: at least 2048 bits are needed")]
    RsaTooSmall,
    /// The key does not parse or is otherwise refused.
    #[error("key rejected: {0}")]
    Rejected(String),
    /// The domain or selector is not a dot-separated list of labels.
    #[error("{0:?} is not a domain name")]
    Name(String),
}

/// Why a message cannot be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkimSignError {
    /// The message has no `From` header, which RFC 6376 §5.4 requires to
    /// be signed.
    #[error("message has no from header")]
    NoFrom,
    /// The signing operation failed.
    #[error("signing failed")]
    Crypto,
}

enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A DKIM signing domain, selector and private key. See the
/// [module docs](self).
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: Key,
}

impl fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl PartialEq for DkimSigner {
    /// Same domain, selector and public key.
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain
            && self.selector == other.selector
            && self.dns_record() == other.dns_record()
    }
}

impl Eq for DkimSigner {}

/// A dot-separated list of letters-digits-hyphen labels (RFC 6376 §3.1
/// selectors and §3.5 `d=` domains, ASCII form).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl DkimSigner {
    /// The signer of report mails configured in `[tls_reporting]`
    /// (`dkim_domain`, `dkim_selector`, `dkim_key`), with its key read and
    /// checked; `None` when none of the three is set (the configuration's own
    /// validation has checked that they come together).
    pub fn from_config(r: &TlsReportingConfig) -> Result<Option<Self>, ConfigError> {
        let (false, false, Some(path)) = (
            r.dkim_domain.is_empty(),
            r.dkim_selector.is_empty(),
            &r.dkim_key,
        ) else {
            return Ok(None);
        };
        Self::from_file(&r.dkim_domain, &r.dkim_selector, path)
            .map(Some)
            .map_err(|e| match e {
                DkimKeyError::Name(name) => invalid(
                    "tls_reporting.dkim_selector",
                    format!("{name:?} is not a selector (dot-separated labels)"),
                ),
                e => invalid("tls_reporting.dkim_key", format!("{}: {e}", path.display())),
            })
    }

    /// A signer for `domain` (`d=`) and `selector` (`s=`) with the PEM
    /// private key `pem` (RSA in PKCS#8 or PKCS#1, or Ed25519 in PKCS#8).
    pub fn from_pem(domain: &str, selector: &str, pem: &[u8]) -> Result<Self, DkimKeyError> {
        for name in [domain, selector] {
            if !is_name(name) {
                return Err(DkimKeyError::Name(name.to_owned()));
            }
        }
        let der =
            PrivateKeyDer::from_pem_slice(pem).map_err(|e| DkimKeyError::Pem(e.to_string()))?;
        let rsa_error = |e: aws_lc_rs::error::KeyRejected| {
            if e.description_() == "TooSmall" {
                DkimKeyError::RsaTooSmall
            } else {
                DkimKeyError::Rejected(e.to_string())
            }
        };
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => {
                Key::Rsa(RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(rsa_error)?)
            }
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(der) {
                    Ok(k) => Key::Rsa(k),
                    Err(e) if e.description_() == "TooSmall" => {
                        return Err(DkimKeyError::RsaTooSmall);
                    }
                    Err(rsa) => match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                        Ok(k) => Key::Ed25519(k),
                        Err(_) => return Err(DkimKeyError::Rejected(rsa.to_string())),
                    },
                }
            }
            PrivateKeyDer::Sec1(_) => return Err(DkimKeyError::Unsupported("EC (SEC1)")),
            _ => return Err(DkimKeyError::Unsupported("unknown")),
        };
        Ok(Self {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_owned(),
            key,
        })
    }

    /// [`from_pem`](Self::from_pem) with the key read from `path`.
    pub fn from_file(domain: &str, selector: &str, path: &Path) -> Result<Self, DkimKeyError> {
        let pem = std::fs::read(path).map_err(DkimKeyError::Read)?;
        Self::from_pem(domain, selector, &pem)
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The `a=` value: `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The RSA modulus length in bits (`None` for Ed25519).
    pub fn rsa_bits(&self) -> Option<usize> {
        match &self.key {
            Key::Rsa(k) => Some(k.public_modulus_len() * 8),
            Key::Ed25519(_) => None,
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`
    /// (RFC 6376 §3.6.1: `p=` is the SubjectPublicKeyInfo for RSA; RFC 8463
    /// §4: the raw 32-byte public key for Ed25519).
    pub fn dns_record(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match &self.key {
            Key::Rsa(k) => {
                let p = k
                    .public_key()
                    .as_der()
                    .map(|d| b64.encode(d.as_ref()))
                    .unwrap_or_default();
                format!("v=DKIM1; k=rsa; p={p}")
            }
            Key::Ed25519(k) => {
                format!(
                    "v=DKIM1; k=ed25519; p={}",
                    b64.encode(k.public_key().as_ref())
                )
            }
        }
    }

    /// Signs `message` (CRLF line endings, header and body separated by an
    /// empty line; without one it is all header) and returns it with the
    /// `DKIM-Signature` header prepended; `now` is the `t=` timestamp.
    pub fn sign(&self, message: &[u8], now: SystemTime) -> Result<Vec<u8>, DkimSignError> {
        let (header, body) = split_message(message);
        let fields = header_fields(header);
        // RFC 6376 §3.5 "h=": the names of the signed fields; §5.4.2: an
        // instance is taken from the bottom up, so the last one is signed.
        let mut names = Vec::new();
        let mut signed = Vec::new();
        for name in SIGNED_HEADERS {
            if let Some((n, v)) = fields
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            {
                names.push(name.to_ascii_lowercase());
                signed.extend_from_slice(&relaxed_header(n, v));
            }
        }
        // RFC 6376 §5.4: "The From header field MUST be signed".
        if !names.iter().any(|n| n == "from") {
            return Err(DkimSignError::NoFrom);
        }
        // §3.7: the body hash over the canonicalised body.
        let b64 = base64::engine::general_purpose::STANDARD;
        let bh = b64.encode(digest(&SHA256, &relaxed_body(body)));
        let t = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut dkim = format!(
            "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n t={t}; h={};\r\n bh={};\r\n b=",
            self.algorithm(),
            self.domain,
            self.selector,
            names.join(":"),
            fold(&bh, FOLD_WIDTH - 4),
        );
        // §3.7: the signed data are the canonicalised signed fields, then the
        // canonicalised DKIM-Signature field with an empty b= and without its
        // trailing CRLF.
        // `dkim` starts with "DKIM-Signature:", so the split always succeeds.
        let (name, value) = dkim.split_once(':').unwrap_or_default();
        let mut own = relaxed_header(name.as_bytes(), value.as_bytes());
        own.truncate(own.len() - 2); // relaxed_header always ends in CRLF
        signed.extend_from_slice(&own);
        let signature = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &signed, &mut sig)
                    .map_err(|_| DkimSignError::Crypto)?;
                sig
            }
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            Key::Ed25519(k) => k.sign(digest(&SHA256, &signed).as_ref()).as_ref().to_vec(),
        };
        dkim.push_str(&fold(&b64.encode(signature), FOLD_WIDTH - 4));
        dkim.push_str("\r\n");
        let mut out = dkim.into_bytes();
        out.extend_from_slice(message);
        Ok(out)
    }
}

/// `s` cut into chunks of `width`, joined by CRLF and a space (folding
/// white space, which verifiers drop from `b=` and `bh=`: RFC 6376 §3.5).
fn fold(s: &str, width: usize) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / width * 3);
    for (i, chunk) in s.as_bytes().chunks(width).enumerate() {
        if i > 0 {
            out.push_str("\r\n ");
        }
        // Base64 is ASCII, so every chunk is a whole string.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}

/// The header and the body of `message`: split at the first empty line
/// (the body starts after its CRLF).
pub(crate) fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return (&[], &message[2..]);
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        // The header keeps the CRLF of its last field.
        Some(i) => (&message[..i + 2], &message[i + 4..]),
        None => (message, &[]),
    }
}

/// The header fields of `header` as (name, value): a field is a line not
/// starting with white space plus the continuation lines after it; the
/// value is everything after the colon, folding included, without the
/// final CRLF.
pub(crate) fn header_fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < header.len() {
        let end = header[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |i| start + i);
        let continuation = matches!(header[start], b' ' | b'\t');
        match fields.last_mut() {
            Some(last) if continuation => last.1 = end,
            _ => fields.push((start, end)),
        }
        start = end + 2;
    }
    fields
        .into_iter()
        .filter_map(|(s, e)| {
            let field = &header[s..e];
            let colon = field.iter().position(|&b| b == b':')?;
            Some((&field[..colon], &field[colon + 1..]))
        })
        .collect()
}

/// RFC 6376 §3.4.2, the "relaxed" header canonicalisation of one field,
/// with its CRLF: the name lower-cased, unfolded (CRLFs removed), runs of
/// white space reduced to one space, white space at the end of the value and
/// around the colon removed.
pub fn relaxed_header(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = name
        .iter()
        .filter(|b| !matches!(b, b' ' | b'\t'))
        .map(u8::to_ascii_lowercase)
        .collect();
    out.push(b':');
    // White space before the first and after the last other byte of the
    // value is dropped; a run in between becomes one space.
    let mut space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                space = false;
                started = true;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 6376 §3.4.4, the "relaxed" body canonicalisation: white space at
/// line ends removed, runs of white space in a line reduced to one space,
/// empty lines at the end removed, a CRLF added to a non-empty body that
/// lacks one; an empty body stays empty.
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut empty_lines = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let mut canonical = Vec::with_capacity(line.len());
        let mut space = false;
        for &b in line {
            if matches!(b, b' ' | b'\t') {
                space = true;
            } else {
                if space {
                    canonical.push(b' ');
                }
                space = false;
                canonical.push(b);
            }
        }
        // Trailing white space is dropped: `space` left pending.
        if canonical.is_empty() {
            empty_lines += 1;
        } else {
            for _ in 0..empty_lines {
                out.extend_from_slice(b"\r\n");
            }
            empty_lines = 0;
            out.extend_from_slice(&canonical);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::signature::{ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use std::time::Duration;

    /// Test keys (made with `openssl genrsa -traditional` and
    /// `openssl ecparam -genkey -noout`); they sign nothing real.
    pub(crate) const RSA_1024_PKCS1: &str = concat!(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "MIICXAIBAAKBgQC6sK6au201HE2UJwoigxD6ZP1dyughMB6hGxSH4Vj7pwMSA2nm\n",
        "VtzQSurSnJCTV8R4NoNh99XWbrjqa0R8cblBTJvBFvHXpxEo919E1AsQnRRg8EiF\n",
        "ESf0sjLAWc9aGDDfasmTv3JLjKbWAQYQ6MVW1JpOp1/xTUuHIpWhyy6X/QIDAQAB\n",
        "AoGAWhZyW1aAb3WV9h0UpezLX5kmLoGAnKtEzIdt09gpgV5pe+LL0owuCBFu2W0V\n",
        "0xQySbQ8mCTpOo25i91xcf/K3eXXvyOoC9s7CH/RlzAr3Yb9ORpz9HY5D6QfY8mY\n",
        "LEkeVY32CYqKwlMgFL5vq0NdK3Dlz7RXVr9YRU/a1waMBD0CQQDfnekwiQFVkXGB\n",
        "F98dgNMHpClzP49wfn4Ysttd0EzEkUU8yfN954rzBnChRuXspDxNYr1hzjpSNCNK\n",
        "+AgWjsF3AkEA1bnMUCKPwNIAy2ltlUtBwwnpw6E7jLANuJmMPZK2Hkwt5G+MsbO0\n",
        "kGEBlZ9wQJmpd3qF9kWGdGab7jcar5rvKwJBAMQmURlo5Em5xdWWKflIOlRWlKFq\n",
        "XJkx68wgf7of8Gbwgspa34JOa5zXxk5B0YetXNQIy9SSQKhA4cBuJzIaUOsCQExX\n",
        "7AWL8vGbkjEW3dAAa+MxfVEmHNFqadxQ7OlpqKg16ga5WfZ4DL2uCRTbOQu6V/CX\n",
        "0ZZgy2B07qovANdNbrUCQBNGuPBj4fWTkbrHxddRZ+bf08Wq3aTV/YYmz32EsITy\n",
        "vo3hmZCb3xUPBB33+tJHKJGx8bpjwPJFvHTGFe8bjHM=\n",
        "-----END RSA PRIVATE KEY-----\n",
    );
    const RSA_2048_PKCS1: &str = concat!(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "MIIEowIBAAKCAQEAsRZ2K9ZlzdBcJY0Maqi6N6lG3vHn4hg87PzawLwwl6murnxD\n",
        "mx9dhHbinMTBuIQ5XTdf1j/ANN/TIfOidxoa8uteAOoh79amKvJMUCtVaiDX7FM6\n",
        "+8qpakNtpnsRHVE6ur6D000VHMoVI9Fv4rNCBnkyEl/astNL8vq12iGdM5JFXNl4\n",
        "b+t2sVq4s7VQihyKt8gHvLmmN8/SC2l7mIiCNLmeY81eItlPsibs1OvNK3nSWM1n\n",
        "xdlgUOSqx6Z0LD6hIvKXGfvU/9oYiJbsqeGCmcZeP9quq5J6+xoRBSzn+eo6LMI7\n",
        "dq4pRqPsWqVgZV4jWqLuhcE4gpEKNdiRoS297wIDAQABAoIBACQGQbvhPYyE2nn5\n",
        "G5GHCXrRQM2RwG5KJ/q95XJX1jrEFfkA5m/kDY4o8SibDh2PKGxCG4jmJx+aeMTr\n",
        "Xx2Dff/0yYa+GnFD5UHPUJ7ucc3JKKO2usUGETjAxsmbN3wTTjM3FnIhuC3HHk3P\n",
        "CUfA16mhdgIu5bqDKWwgfGYHeIdI31yBOH1kK8Qua0axHHXZ/kWUJAgvFfBbchLy\n",
        "1V7338s0vU7muMepMLZfReegktwApV7FzS5A6C/sqPLqVsSsDcBY8OgcFv/YRtgs\n",
        "01oRVwwwPR1nOoGL6EiOK8TBAPXMly6tldKa1R2B2d7rTA65HsENcQoLlP3y+3ao\n",
        "aRHs+6ECgYEA5XSoF7ss+aOtJlL9um4kCRIXmVE1CEbsjdUCiVaStGcP1rpvzHMa\n",
        "aXqnchV8rKQ3AoUyujPA4ecNWgMV8WFOq47MKxuY9XFWhh4NszlxCF9UtDl2OhP8\n",
        "lGDdUQSM3hsF5NN5p2l72zIrRJTz+44iuLJx3rIJuU+LtWP/yJYqJGUCgYEAxZLs\n",
        "2KElPCTopbZGAQuj8FXW9TYTqz1I6cOOplZKUO6G0pM+i38DBUFoDD4eghAkSvXg\n",
        "V+3XPLoWvetxXxiczo1+MF7qEmeWG5YD+N1+NGF524jOJQEmV0U9ql0CjMYhTMKm\n",
        "HtbhgjnR100oxc9gBojtWqXGG9uJkSi3/mEnIcMCgYEAiNblWCG8VLSUEoLz5jbB\n",
        "LtenUzvm0KTbdkpOVPFYVFYSUBCnk9ohKj6HlbXSwHK+i7Y75mfu48oTYFbuwyEw\n",
        "9YcXo621rsqEuz85FGVxT3jq3wBVzZUV0LdjxWldSSf8f9bOelSiFLr6qs/aIW9G\n",
        "rbddyV2MBwO1YdvdMxa60zECgYAZDVZG6bgE9lEhogkiXM1+zgOhuCeqUO0L5yYR\n",
        "ZWOq+3PRA6asnYBOjEqbMs0/hLh1YNP/kkL2ikoT7uTDQCWx8zMLAx3/E29vNAhw\n",
        "5/T2w11mPuSUwJ6R9k+paH3IR981EoFp66lQj/BRspD29CKi8X3XPqnuIlpBM76Q\n",
        "3NTPbQKBgGqSfymN2y6ZjS3BK7ZL7J75sWHyoupg2RcwJo2YM54qQUul4ngEO09p\n",
        "qltmAOxzBZCx43VYgVI2uuLJDH4t0MDQElxowI8a6laT5mlZyl1tvbGCM/R9fPYJ\n",
        "mlEgd1OlJCprUPWpASEvniY4zxVCSK0q7HDslMgmAWzywQBRWmAh\n",
        "-----END RSA PRIVATE KEY-----\n",
    );
    const EC_SEC1: &str = concat!(
        "-----BEGIN EC PRIVATE KEY-----\n",
        "MHcCAQEEIFEidJyv6AOlfiMitGvG2Jp6IzgB9FEu5FmPw+86jjIroAoGCCqGSM49\n",
        "AwEHoUQDQgAEic8b78bG86bv+D9zY0Kq6P099PVEM9+etOHCDLmK7DX1vESULBhO\n",
        "8EjL+r/2opckFsb+SjKEurYfQCOvfbG3qQ==\n",
        "-----END EC PRIVATE KEY-----\n",
    );

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            B64.encode(der)
        )
    }

    fn rsa_pkcs8() -> String {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = key.as_der().unwrap();
        pem("PRIVATE KEY", der.as_ref())
    }

    fn ed25519_pkcs8() -> String {
        let doc = Ed25519KeyPair::generate().unwrap().to_pkcs8().unwrap();
        pem("PRIVATE KEY", doc.as_ref())
    }

    fn report_mail() -> Vec<u8> {
        b"From: <postmaster@example.com>\r\n\
          To: <tlsrpt@example.net>\r\n\
          Date: Sat, 28 Nov 2026 07:00:00 +0000\r\n\
          Message-ID: <1.2.tlsrpt@mx.example.com>\r\n\
          Subject: Report Domain: example.net Submitter: mx.example.com Report-ID: <x>\r\n\
          TLS-Report-Domain: example.net\r\n\
          TLS-Report-Submitter: mx.example.com\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\
          \tboundary=\"b1\"\r\n\
          X-Unsigned: yes\r\n\
          \r\n\
          --b1\r\n\
          Content-Type: text/plain\r\n\
          \r\n\
          A report.  \r\n\
          --b1--\r\n\
          \r\n\
          \r\n"
            .to_vec()
    }

    fn at(t: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(t)
    }

    /// The tags of a `DKIM-Signature` value, white space removed.
    fn tags(value: &str) -> Vec<(String, String)> {
        value
            .split(';')
            .filter_map(|t| {
                let (k, v) = t.split_once('=')?;
                let strip = |s: &str| s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                Some((strip(k), strip(v)))
            })
            .collect()
    }

    /// A verifier following RFC 6376 §6.1.3 for relaxed/relaxed: checks
    /// `bh=`, rebuilds the signed data from `h=` and the signature field with
    /// `b=` emptied, and verifies `b=` against the public key `public` (raw
    /// for Ed25519, PKCS#1 for RSA).
    fn verify(signed: &[u8], public: &[u8]) -> Result<(), &'static str> {
        let (header, body) = split_message(signed);
        let fields = header_fields(header);
        let (name, value) = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"dkim-signature"))
            .ok_or("no signature")?;
        let value = std::str::from_utf8(value).map_err(|_| "not ascii")?;
        let tags = tags(value);
        let tag = |k: &str| {
            tags.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .ok_or("missing tag")
        };
        if tag("c")? != "relaxed/relaxed" || tag("v")? != "1" {
            return Err("unexpected tags");
        }
        let bh = B64.encode(digest(&SHA256, &relaxed_body(body)));
        if tag("bh")? != bh {
            return Err("body hash mismatch");
        }
        let mut data = Vec::new();
        let mut used = vec![false; fields.len()];
        for h in tag("h")?.split(':') {
            // §5.4.2: bottom up, each instance once.
            if let Some(i) = (0..fields.len())
                .rev()
                .find(|&i| !used[i] && fields[i].0.eq_ignore_ascii_case(h.as_bytes()))
            {
                used[i] = true;
                data.extend_from_slice(&relaxed_header(fields[i].0, fields[i].1));
            }
        }
        let emptied: Vec<String> = value
            .split(';')
            .map(|t| match t.split_once('=') {
                Some((k, _)) if k.trim() == "b" => format!("{k}="),
                _ => t.to_owned(),
            })
            .collect();
        let mut own = relaxed_header(name, emptied.join(";").as_bytes());
        own.truncate(own.len() - 2);
        data.extend_from_slice(&own);
        let b = B64.decode(tag("b")?).map_err(|_| "bad b=")?;
        let ok = match tag("a")?.as_str() {
            "rsa-sha256" => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
                .verify(&data, &b)
                .is_ok(),
            "ed25519-sha256" => UnparsedPublicKey::new(&ED25519, public)
                .verify(digest(&SHA256, &data).as_ref(), &b)
                .is_ok(),
            _ => false,
        };
        if ok { Ok(()) } else { Err("bad signature") }
    }

    fn public_key(signer: &DkimSigner) -> Vec<u8> {
        match &signer.key {
            Key::Rsa(k) => k.public_key().as_ref().to_vec(),
            Key::Ed25519(k) => k.public_key().as_ref().to_vec(),
        }
    }

    #[test]
    fn rfc6376_3_4_5_example() {
        let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (header, body) = split_message(message);
        let canonical: Vec<u8> = header_fields(header)
            .into_iter()
            .flat_map(|(n, v)| relaxed_header(n, v))
            .collect();
        assert_eq!(canonical, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(relaxed_body(body), b" C\r\nD E\r\n");
    }

    #[test]
    fn body_edge_cases() {
        // §3.4.4: an empty body stays empty (its SHA-256 is the well-known
        // empty hash); trailing empty or blank lines go; a missing final
        // CRLF is added.
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n \t\r\n"), b"");
        assert_eq!(
            B64.encode(digest(&SHA256, &relaxed_body(b"\r\n"))),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(relaxed_body(b"a  b"), b"a b\r\n");
        assert_eq!(relaxed_body(b"a\r\n\r\nb\r\n\r\n"), b"a\r\n\r\nb\r\n");
        assert_eq!(relaxed_body(b"\tx\t\r\n"), b" x\r\n");
    }

    #[test]
    fn header_edge_cases() {
        assert_eq!(
            relaxed_header(b"Subject ", b"  a \t b  "),
            b"subject:a b\r\n"
        );
        assert_eq!(relaxed_header(b"X", b""), b"x:\r\n");
        assert_eq!(relaxed_header(b"X", b" a\r\n\tb\r\n c"), b"x:a b c\r\n");
    }

    #[test]
    fn rsa_pkcs8_round_trip_and_tampering() {
        let signer = DkimSigner::from_pem("Example.COM", "tlsrpt", rsa_pkcs8().as_bytes()).unwrap();
        assert_eq!(signer.algorithm(), "rsa-sha256");
        assert_eq!(signer.rsa_bits(), Some(2048));
        assert_eq!(signer.domain(), "example.com");
        let signed = signer.sign(&report_mail(), at(1_795_000_000)).unwrap();
        let public = public_key(&signer);
        verify(&signed, &public).unwrap();

        let text = String::from_utf8(signed.clone()).unwrap();
        let (header, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.ends_with(std::str::from_utf8(&report_mail()).unwrap()));
        assert!(header.contains(
            " h=from:to:subject:date:message-id:mime-version:content-type:tls-report-domain:tls-report-submitter;"
        ));
        assert!(header.contains(" t=1795000000;"));
        assert!(header.contains("d=example.com; s=tlsrpt;"));
        assert!(!header.contains("x-unsigned"));
        for line in text.split("\r\n") {
            assert!(line.len() < 998, "{line}");
        }

        // A changed body, a changed signed header, a removed signed header
        // and a changed signature all fail; an unsigned header may change.
        let tamper = |from: &str, to: &str| {
            let t = text.replacen(from, to, 1);
            assert_ne!(t, text);
            verify(t.as_bytes(), &public)
        };
        assert_eq!(tamper("A report.", "A rep0rt."), Err("body hash mismatch"));
        assert_eq!(tamper("To: <tlsrpt@", "To: <tlsrpu@"), Err("bad signature"));
        assert_eq!(
            tamper("TLS-Report-Domain: example.net\r\n", ""),
            Err("bad signature")
        );
        assert_eq!(tamper("s=tlsrpt;", "s=tlsrpu;"), Err("bad signature"));
        assert_eq!(tamper("X-Unsigned: yes", "X-Unsigned: no"), Ok(()));
        // Relaxed canonicalisation tolerates white space changes.
        assert_eq!(tamper("Subject: Report", "Subject:   Report"), Ok(()));
        assert_eq!(tamper("A report.  ", "A  report."), Ok(()));
        // Another key does not verify it.
        let other = DkimSigner::from_pem("example.com", "tlsrpt", rsa_pkcs8().as_bytes()).unwrap();
        assert_eq!(verify(&signed, &public_key(&other)), Err("bad signature"));
    }

    #[test]
    fn rsa_pkcs1_and_ed25519_keys() {
        let rsa = DkimSigner::from_pem("example.com", "s1", RSA_2048_PKCS1.as_bytes()).unwrap();
        assert_eq!(rsa.rsa_bits(), Some(2048));
        let signed = rsa.sign(&report_mail(), at(1)).unwrap();
        verify(&signed, &public_key(&rsa)).unwrap();
        assert!(rsa.dns_record().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));

        let ed = DkimSigner::from_pem("example.com", "s2", ed25519_pkcs8().as_bytes()).unwrap();
        assert_eq!(ed.algorithm(), "ed25519-sha256");
        assert_eq!(ed.rsa_bits(), None);
        let signed = ed.sign(&report_mail(), at(1)).unwrap();
        verify(&signed, &public_key(&ed)).unwrap();
        let tampered = String::from_utf8(signed)
            .unwrap()
            .replace("example.net", "example.org");
        assert_eq!(
            verify(tampered.as_bytes(), &public_key(&ed)),
            Err("bad signature")
        );
        // The DNS record carries the raw 32-byte key (RFC 8463 §4).
        let p = ed.dns_record().rsplit_once("p=").unwrap().1.to_owned();
        assert_eq!(B64.decode(p).unwrap(), public_key(&ed));
    }

    #[test]
    fn bad_keys_and_names_are_refused() {
        let err = |domain: &str, pem: &str| {
            DkimSigner::from_pem(domain, "sel", pem.as_bytes()).unwrap_err()
        };
        assert!(matches!(
            err("example.com", RSA_1024_PKCS1),
            DkimKeyError::RsaTooSmall
        ));
        assert!(matches!(
            err("example.com", EC_SEC1),
            DkimKeyError::Unsupported(_)
        ));
        assert!(matches!(
            err("example.com", "no key here"),
            DkimKeyError::Pem(_)
        ));
        assert!(matches!(
            err(
                "example.com",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            DkimKeyError::Rejected(_)
        ));
        assert!(matches!(
            err("exa mple.com", &ed25519_pkcs8()),
            DkimKeyError::Name(_)
        ));
        assert!(matches!(
            DkimSigner::from_pem("example.com", "a;b", ed25519_pkcs8().as_bytes()).unwrap_err(),
            DkimKeyError::Name(_)
        ));
        assert!(matches!(
            DkimSigner::from_file("example.com", "s", Path::new("/nonexistent/dkim.pem"))
                .unwrap_err(),
            DkimKeyError::Read(_)
        ));
    }

    #[test]
    fn a_message_without_from_is_not_signed() {
        let signer = DkimSigner::from_pem("example.com", "s", ed25519_pkcs8().as_bytes()).unwrap();
        assert!(matches!(
            signer.sign(b"Subject: x\r\n\r\nbody\r\n", at(1)),
            Err(DkimSignError::NoFrom)
        ));
    }
}
