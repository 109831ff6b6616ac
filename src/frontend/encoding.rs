//! Reading SQL text in the client's encoding.
//!
//! PostgreSQL converts a client's text from `client_encoding` before it parses it, so the
//! classifier must see the characters the server will see. Bytes are always forwarded
//! unchanged; only the copy that is classified is decoded. Text that cannot be decoded
//! exactly (an invalid sequence, or an encoding whose multi-byte characters can hide
//! ASCII bytes and that no decoder here knows) is not guessed at: the caller routes it to
//! the primary, whose own error (or success) the client then sees.

use std::borrow::Cow;

/// A client encoding, by the name the server reports in ParameterStatus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Utf8,
    /// Every byte below 0x80 is ASCII and every byte above it belongs to a non-ASCII
    /// character: decoded with `decoder` (SQL_ASCII and encodings without an exact
    /// decoder use a total single-byte mapping, which keeps the SQL structure exact).
    AsciiSafe(&'static encoding_rs::Encoding),
    /// Multi-byte characters whose trailing bytes may look like ASCII (`\`, `'`, ...).
    Decoded(&'static encoding_rs::Encoding),
    /// Such an encoding with no decoder here (JOHAB): non-ASCII text is not classified.
    Opaque,
}

impl Encoding {
    /// The encoding a server-reported `client_encoding` value names; an unknown name is
    /// `Opaque` (never guessed).
    pub fn from_name(name: &str) -> Encoding {
        use encoding_rs::{
            BIG5, EUC_JP, EUC_KR, GB18030, GBK, IBM866, ISO_8859_10, ISO_8859_13, ISO_8859_14, ISO_8859_15,
            ISO_8859_16, ISO_8859_2, ISO_8859_3, ISO_8859_4, ISO_8859_5, ISO_8859_6, ISO_8859_7, ISO_8859_8, KOI8_R,
            KOI8_U, SHIFT_JIS, WINDOWS_1250, WINDOWS_1251, WINDOWS_1252, WINDOWS_1253, WINDOWS_1254, WINDOWS_1255,
            WINDOWS_1256, WINDOWS_1257, WINDOWS_1258, WINDOWS_874,
        };
        let n = name.to_ascii_uppercase().replace(['-', '_'], "");
        let safe = |e| Encoding::AsciiSafe(e);
        match n.as_str() {
            "UTF8" | "UNICODE" => Encoding::Utf8,
            "SQLASCII" | "LATIN1" | "ISO88591" | "EUCTW" | "MULEINTERNAL" => safe(WINDOWS_1252),
            "LATIN2" | "ISO88592" => safe(ISO_8859_2),
            "LATIN3" | "ISO88593" => safe(ISO_8859_3),
            "LATIN4" | "ISO88594" => safe(ISO_8859_4),
            "LATIN5" | "ISO88599" => safe(WINDOWS_1254),
            "LATIN6" | "ISO885910" => safe(ISO_8859_10),
            "LATIN7" | "ISO885913" => safe(ISO_8859_13),
            "LATIN8" | "ISO885914" => safe(ISO_8859_14),
            "LATIN9" | "ISO885915" => safe(ISO_8859_15),
            "LATIN10" | "ISO885916" => safe(ISO_8859_16),
            "ISO88595" => safe(ISO_8859_5),
            "ISO88596" => safe(ISO_8859_6),
            "ISO88597" => safe(ISO_8859_7),
            "ISO88598" => safe(ISO_8859_8),
            "WIN866" | "ALT" => safe(IBM866),
            "WIN874" => safe(WINDOWS_874),
            "WIN1250" => safe(WINDOWS_1250),
            "WIN1251" | "WIN" => safe(WINDOWS_1251),
            "WIN1252" => safe(WINDOWS_1252),
            "WIN1253" => safe(WINDOWS_1253),
            "WIN1254" => safe(WINDOWS_1254),
            "WIN1255" => safe(WINDOWS_1255),
            "WIN1256" => safe(WINDOWS_1256),
            "WIN1257" => safe(WINDOWS_1257),
            "WIN1258" => safe(WINDOWS_1258),
            "KOI8R" | "KOI8" => safe(KOI8_R),
            "KOI8U" => safe(KOI8_U),
            "EUCJP" | "EUCJIS2004" => safe(EUC_JP),
            "EUCCN" => safe(GBK),
            "EUCKR" => safe(EUC_KR),
            "SJIS" | "SHIFTJIS" | "SHIFTJIS2004" | "MSKANJI" => Encoding::Decoded(SHIFT_JIS),
            "BIG5" => Encoding::Decoded(BIG5),
            "GBK" | "CP936" => Encoding::Decoded(GBK),
            "GB18030" => Encoding::Decoded(GB18030),
            "UHC" => Encoding::Decoded(EUC_KR),
            _ => Encoding::Opaque,
        }
    }

    /// The text as the server will read it, or `None` when it cannot be known here.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        if let Ok(s) = std::str::from_utf8(bytes) {
            // Valid UTF-8 reads the same in any encoding whose non-ASCII bytes never hide
            // ASCII, as long as it is plain ASCII or the client's encoding is UTF-8.
            if *self == Encoding::Utf8 || s.is_ascii() {
                return Some(Cow::Borrowed(s));
            }
        }
        let decoder = match self {
            Encoding::Utf8 | Encoding::Opaque => return None,
            Encoding::AsciiSafe(e) | Encoding::Decoded(e) => e,
        };
        let (text, had_errors) = decoder.decode_without_bom_handling(bytes);
        (!had_errors).then_some(text)
    }
}

impl Encoding {
    /// A number for this encoding, the same for the same encoding (the classifier's front
    /// cache keeps how bytes read in one).
    pub fn id(&self) -> usize {
        match self {
            Encoding::Utf8 => 0,
            Encoding::Opaque => 1,
            Encoding::AsciiSafe(e) => 2 | (*e as *const encoding_rs::Encoding as usize) << 2,
            Encoding::Decoded(e) => 3 | (*e as *const encoding_rs::Encoding as usize) << 2,
        }
    }

    /// `text` in this encoding, or `None` when some character has no exact encoding.
    pub fn encode(&self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Utf8 => Some(text.as_bytes().to_vec()),
            Encoding::Opaque => text.is_ascii().then(|| text.as_bytes().to_vec()),
            Encoding::AsciiSafe(e) | Encoding::Decoded(e) => {
                let (bytes, _, unmappable) = e.encode(text);
                (!unmappable).then(|| bytes.into_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_in_the_clients_encoding() {
        let latin9 = Encoding::from_name("LATIN9");
        assert_eq!(latin9.decode(b"SELECT 'caf\xe9 \xa4'").as_deref(), Some("SELECT 'café €'"));
        // 0x5C (a backslash in ASCII) is the second byte of a Shift-JIS character: it
        // must not escape the closing quote of an E'' string.
        let sjis = Encoding::from_name("SJIS");
        assert_eq!(sjis.decode(b"SELECT E'\x95\x5c'; DELETE").as_deref(), Some("SELECT E'表'; DELETE"));
        // Valid UTF-8 bytes that mean something else in Shift-JIS are decoded as Shift-JIS.
        assert_eq!(sjis.decode("ぁ".as_bytes()).as_deref(), sjis.decode(b"\xe3\x81\x81").as_deref());
        assert_ne!(sjis.decode("ぁ".as_bytes()).as_deref(), Some("ぁ"));
        assert_eq!(Encoding::from_name("euc_jp").decode(b"SELECT '\xc9\xbd'").as_deref(), Some("SELECT '表'"));
        assert_eq!(sjis.encode("SELECT E'表'").as_deref(), Some(&b"SELECT E'\x95\x5c'"[..]));
    }

    #[test]
    fn what_cannot_be_read_exactly_is_not_guessed() {
        assert_eq!(Encoding::Utf8.decode(b"SELECT '\xff'"), None);
        assert_eq!(Encoding::from_name("SJIS").decode(b"SELECT '\x81'"), None);
        assert_eq!(Encoding::from_name("JOHAB").decode(b"SELECT '\x88\x61'"), None);
        assert_eq!(Encoding::from_name("JOHAB").decode(b"SELECT 1").as_deref(), Some("SELECT 1"));
        assert_eq!(Encoding::from_name("no such encoding"), Encoding::Opaque);
        assert_eq!(Encoding::from_name("SQL_ASCII").decode(b"SELECT '\xff'").map(|s| s.len()), Some(11));
    }
}
