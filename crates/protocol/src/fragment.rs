//! Fragment and SHA-1 sum helpers.
//!
//! A `SHA1Sum` carries the 20 bytes of a SHA-1 digest as two big-endian `fixed64` parts
//! and one big-endian `fixed32` part, as Gazette encodes it.

use std::fmt;

use crate::proto::{CompressionCodec, Fragment, Sha1Sum};
use crate::validation::ValidationError;

impl Sha1Sum {
    /// The sum of a 20-byte SHA-1 digest.
    pub fn from_digest(digest: [u8; 20]) -> Self {
        let part = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&digest[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut tail = [0u8; 4];
        tail.copy_from_slice(&digest[16..20]);
        Self {
            part1: part(0),
            part2: part(8),
            part3: u32::from_be_bytes(tail),
        }
    }

    /// The 20 digest bytes.
    pub fn to_digest(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..8].copy_from_slice(&self.part1.to_be_bytes());
        out[8..16].copy_from_slice(&self.part2.to_be_bytes());
        out[16..].copy_from_slice(&self.part3.to_be_bytes());
        out
    }

    /// Parses 40 lowercase or uppercase hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, ValidationError> {
        let bytes = hex.as_bytes();
        if bytes.len() != 40 {
            return Err(ValidationError::new(format!(
                "{hex:?} is not a SHA-1 sum (expected 40 hex digits, found {})",
                bytes.len()
            )));
        }
        let mut digest = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).ok();
            digest[i] = text
                .and_then(|t| u8::from_str_radix(t, 16).ok())
                .ok_or_else(|| {
                    ValidationError::new(format!("{hex:?} is not a SHA-1 sum (non-hex digit)"))
                })?;
        }
        Ok(Self::from_digest(digest))
    }

    /// Whether this is the zero sum (of a fragment not yet summed).
    pub fn is_zero(&self) -> bool {
        self.part1 == 0 && self.part2 == 0 && self.part3 == 0
    }
}

/// 40 lowercase hex digits.
impl fmt::Display for Sha1Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}{:016x}{:08x}",
            self.part1, self.part2, self.part3
        )
    }
}

impl Fragment {
    /// Bytes of journal content the fragment spans.
    pub fn content_length(&self) -> i64 {
        self.end - self.begin
    }

    /// Whether `offset` lies inside `[begin, end)`.
    pub fn contains(&self, offset: i64) -> bool {
        self.begin <= offset && offset < self.end
    }

    /// The fragment's codec; unknown values read as `Invalid`.
    pub fn codec(&self) -> CompressionCodec {
        CompressionCodec::try_from(self.compression_codec).unwrap_or(CompressionCodec::Invalid)
    }

    /// The fragment's SHA-1 sum; absent reads as zero.
    pub fn sha1(&self) -> Sha1Sum {
        self.sum.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_round_trip() {
        let digest: [u8; 20] = std::array::from_fn(|i| (i as u8) * 13 + 1);
        let sum = Sha1Sum::from_digest(digest);
        assert_eq!(sum.to_digest(), digest);
        let hex = sum.to_string();
        assert_eq!(hex.len(), 40);
        assert_eq!(
            hex,
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(Sha1Sum::from_hex(&hex).expect("hex"), sum);
        assert_eq!(Sha1Sum::from_hex(&hex.to_uppercase()).expect("upper"), sum);
        assert!(Sha1Sum::from_hex("abc").is_err());
        assert!(Sha1Sum::from_hex(&"g".repeat(40)).is_err());
        assert!(Sha1Sum::default().is_zero());
    }
}
