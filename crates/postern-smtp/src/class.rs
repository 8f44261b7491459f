//! Octet classes of the command grammar (RFC 5321 section 4.1.2, RFC 3461 section 4), one table lookup per
//! octet: each entry holds one bit per class the octet belongs to. Non-ASCII octets belong to no class (the
//! parsers send them to their character-level paths).

/// RFC 5322 3.2.3 `atext` (ASCII part), the octets of a `Dot-string` atom (RFC 5321 4.1.2).
pub(crate) const ATEXT: u8 = 1;
/// A domain label octet: `ALPHA / DIGIT / "-"` (RFC 5321 4.1.2 `Ldh-str`) plus `_`, which real host names use.
pub(crate) const LDH: u8 = 2;
/// RFC 5321 4.1.2 `esmtp-keyword` octet: `ALPHA / DIGIT / "-"`.
pub(crate) const KEYCHAR: u8 = 4;
/// `ALPHA / DIGIT`: the first octet of an `esmtp-keyword`.
pub(crate) const ALNUM: u8 = 8;
/// RFC 3461 4 `xchar`: `!` to `~` except `+` and `=`.
pub(crate) const XCHAR: u8 = 16;
/// The hex digits of an RFC 3461 `hexchar` (`+` then two of `0-9`, `A-F`; upper case only).
pub(crate) const HEX: u8 = 32;

/// The class bits of every octet.
pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        let special = matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        );
        if alnum || special {
            t[b] |= ATEXT;
        }
        if alnum || c == b'-' || c == b'_' {
            t[b] |= LDH;
        }
        if alnum || c == b'-' {
            t[b] |= KEYCHAR;
        }
        if alnum {
            t[b] |= ALNUM;
        }
        if c >= b'!' && c <= b'~' && c != b'+' && c != b'=' {
            t[b] |= XCHAR;
        }
        if c.is_ascii_digit() || (c >= b'A' && c <= b'F') {
            t[b] |= HEX;
        }
        b += 1;
    }
    t
};

/// Whether octet `c` is in class `class`.
#[inline(always)]
pub(crate) fn is(c: u8, class: u8) -> bool {
    CLASS[usize::from(c)] & class != 0
}

/// A word matched case-insensitively in one or two integer compares: the word in lower case as a little-endian
/// `u128`, and a mask with 0x20 on its letters. `ALPHA` octets differ from their other case only in bit 5, so
/// OR-ing the mask into the input maps each letter position of an input to lower case; an octet that is not
/// a letter of either case never becomes a lower-case letter that way (0x41-0x5A and 0x61-0x7A are the only
/// preimages of 0x61-0x7A under `| 0x20`), and the other positions are compared exactly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Word {
    lower: u128,
    mask: u128,
    len: usize,
}

impl Word {
    /// `word` may hold letters of either case and other printable octets, at most 16 of them.
    pub(crate) const fn new(word: &[u8]) -> Self {
        assert!(word.len() <= 16);
        let (mut lower, mut mask) = (0u128, 0u128);
        let mut i = 0;
        while i < word.len() {
            let c = word[i].to_ascii_lowercase();
            lower |= (c as u128) << (8 * i);
            if c.is_ascii_lowercase() {
                mask |= 0x20 << (8 * i);
            }
            i += 1;
        }
        Self {
            lower,
            mask,
            len: word.len(),
        }
    }

    /// Whether `s` is this word, ignoring ASCII case.
    #[inline(always)]
    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        if s.len() != self.len {
            return false;
        }
        let mut buf = [0u8; 16];
        // `s.len() == self.len <= 16` (tested above, asserted in `new`): the copy cannot panic.
        buf[..self.len].copy_from_slice(s);
        u128::from_le_bytes(buf) | self.mask == self.lower
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_grammar() {
        for c in 0..=255u8 {
            let atext = c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c);
            assert_eq!(is(c, ATEXT), atext, "{c:#x}");
            let ldh = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
            assert_eq!(is(c, LDH), ldh, "{c:#x}");
            assert_eq!(
                is(c, KEYCHAR),
                c.is_ascii_alphanumeric() || c == b'-',
                "{c:#x}"
            );
            assert_eq!(is(c, ALNUM), c.is_ascii_alphanumeric(), "{c:#x}");
            let xchar = (b'!'..=b'~').contains(&c) && c != b'+' && c != b'=';
            assert_eq!(is(c, XCHAR), xchar, "{c:#x}");
            let hex = c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
            assert_eq!(is(c, HEX), hex, "{c:#x}");
        }
    }

    #[test]
    fn words_match_ignoring_case_only() {
        const W: Word = Word::new(b"SMTPUTF8");
        assert!(W.matches(b"SMTPUTF8"));
        assert!(W.matches(b"smtpUtf8"));
        assert!(!W.matches(b"SMTPUTF"));
        assert!(!W.matches(b"SMTPUTF88"));
        // 0x18 | 0x20 == b'8': digits are compared exactly.
        assert!(!W.matches(b"SMTPUTF\x18"));
        // Every single-octet change other than a letter's case is refused.
        let word = b"SMTPUTF8";
        for i in 0..word.len() {
            for c in 0..=255u8 {
                let mut s = *word;
                s[i] = c;
                assert_eq!(
                    W.matches(&s),
                    c.eq_ignore_ascii_case(&word[i]),
                    "{i} {c:#x}"
                );
            }
        }
    }
}
