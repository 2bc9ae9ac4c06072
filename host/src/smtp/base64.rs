//! Base64 (RFC 4648 §4, standard alphabet with padding): SASL exchanges
//! (RFC 4954) and binary values in recordings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Encode with padding.
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode canonical padded base64; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\xff\x00\x80",
        ] {
            let e = encode(data);
            assert_eq!(decode(&e).as_deref(), Some(data), "{e}");
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert!(decode("Zm9").is_none());
        assert!(decode("Zm=vYmFy").is_none());
        assert!(decode("Zm9*").is_none());
    }

    #[test]
    fn sasl_plain_vector() {
        assert_eq!(encode(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }
}
