//! The EHLO reply: greeting line and service extension keywords (RFC 5321 4.1.1.1 and 4.1.4; RFC 1870 SIZE,
//! RFC 2920 PIPELINING, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING/BINARYMIME, RFC 3207 STARTTLS,
//! RFC 2034 ENHANCEDSTATUSCODES, RFC 8689 REQUIRETLS, RFC 3461 DSN). Unknown keywords are kept verbatim.

use crate::reply::Reply;

/// Extensions advertised in an EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `SIZE [n]` (RFC 1870): `Some(0)` when advertised without a fixed limit.
    pub size: Option<u64>,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `CHUNKING` (RFC 3030).
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030).
    pub binary_mime: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `AUTH` mechanisms (RFC 4954), if advertised.
    pub auth: Option<Vec<String>>,
    /// Every other extension line, verbatim.
    pub other: Vec<String>,
}

/// A parsed EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EhloReply {
    /// The domain the server names itself with (first word of the first line).
    pub domain: String,
    /// The extensions of the following lines.
    pub capabilities: Capabilities,
}

impl Capabilities {
    /// Parse a positive EHLO reply: the first line is `domain [greeting]`, each following line one extension
    /// (`ehlo-keyword *( SP ehlo-param )`, keywords case-insensitive). Returns `None` for a non-2xx reply.
    pub fn parse_ehlo(reply: &Reply) -> Option<EhloReply> {
        if !reply.code().is_positive() {
            return None;
        }
        let mut lines = reply.lines().iter();
        let domain = lines
            .next()
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let mut caps = Self::default();
        for line in lines {
            let mut words = line.split(' ').filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                // RFC 1870 4: "SIZE" [SP number]; a malformed number is treated as no fixed limit.
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "BINARYMIME" => caps.binary_mime = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "REQUIRETLS" => caps.requiretls = true,
                "DSN" => caps.dsn = true,
                "AUTH" => caps.auth = Some(words.map(str::to_owned).collect()),
                _ => caps.other.push(line.clone()),
            }
        }
        Some(EhloReply {
            domain,
            capabilities: caps,
        })
    }

    /// Build the EHLO reply `250-domain greeting` followed by one line per extension.
    pub fn ehlo_reply(&self, domain: &str, greeting: &str) -> Reply {
        let mut lines = vec![if greeting.is_empty() {
            domain.to_owned()
        } else {
            format!("{domain} {greeting}")
        }];
        if self.pipelining {
            lines.push("PIPELINING".into());
        }
        if let Some(size) = self.size {
            lines.push(if size == 0 {
                "SIZE".into()
            } else {
                format!("SIZE {size}")
            });
        }
        if let Some(auth) = &self.auth {
            lines.push(format!("AUTH {}", auth.join(" ")));
        }
        for (on, kw) in [
            (self.starttls, "STARTTLS"),
            (self.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (self.eight_bit_mime, "8BITMIME"),
            (self.dsn, "DSN"),
            (self.smtputf8, "SMTPUTF8"),
            (self.chunking, "CHUNKING"),
            (self.binary_mime, "BINARYMIME"),
            (self.requiretls, "REQUIRETLS"),
        ] {
            if on {
                lines.push(kw.into());
            }
        }
        lines.extend(
            self.other
                .iter()
                .map(|l| l.chars().filter(|c| !c.is_control()).collect()),
        );
        Reply::plain(250, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;

    #[test]
    fn parse_and_encode() {
        let wire = b"250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-starttls\r\n250-AUTH PLAIN LOGIN\r\n250-X-FOO bar\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
        let (_, reply) = ReplyParser::default().feed(wire).unwrap();
        let ehlo = Capabilities::parse_ehlo(&reply.unwrap()).unwrap();
        assert_eq!(ehlo.domain, "mx.example.org");
        let c = &ehlo.capabilities;
        assert_eq!(c.size, Some(10_240_000));
        assert!(
            c.pipelining
                && c.starttls
                && c.enhanced_status_codes
                && c.eight_bit_mime
                && c.dsn
                && c.smtputf8
                && c.chunking
        );
        assert!(!c.requiretls && !c.binary_mime);
        assert_eq!(
            c.auth.as_deref(),
            Some(&["PLAIN".to_owned(), "LOGIN".to_owned()][..])
        );
        assert_eq!(c.other, vec!["X-FOO bar".to_owned()]);
        let again = Capabilities::parse_ehlo(&c.ehlo_reply("mx.example.org", "")).unwrap();
        assert_eq!(&again.capabilities, c);
    }

    #[test]
    fn negative_reply_is_none() {
        let r = Reply::fixed(502, (5, 5, 2), "Error: command not recognized");
        assert!(Capabilities::parse_ehlo(&r).is_none());
    }
}
