//! Fragment codecs: none, gzip, zstd and snappy (framed), streaming both ways.
//!
//! Files are standard streams that ordinary tools read: `.zst` with `zstd -d`, `.gz` with
//! `gzip -d`, `.sz` with any snappy framing-format reader. Encoders and decoders hold a
//! bounded window (the codec's block), never a whole fragment. A corrupt or truncated
//! stream is an error, never wrong bytes: every decoder checks its framing and checksums
//! (gzip CRC-32, zstd frame end, snappy CRC-32C per chunk).
//!
//! `GZIP_OFFLOAD_DECOMPRESSION` fragments are gzip streams stored with
//! `Content-Encoding: gzip`; they decode as gzip.

use std::io::{self, BufRead, Read, Write};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use folio_protocol::CompressionCodec;

use crate::{Error, Result};

/// zstd level used for fragments: level 1 keeps compression off the critical path while
/// still shrinking JSON-like journals about five times.
pub const ZSTD_LEVEL: i32 = 1;

/// A streaming compressor writing into `W`.
pub enum Compressor<W: Write> {
    /// No compression.
    None(W),
    /// gzip (one member).
    Gzip(GzEncoder<W>),
    /// zstd (one frame, with content checksum).
    Zstd(zstd::Encoder<'static, W>),
    /// snappy framing format.
    Snappy(Box<snap::write::FrameEncoder<W>>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compressor::None(_) => "Compressor::None",
            Compressor::Gzip(_) => "Compressor::Gzip",
            Compressor::Zstd(_) => "Compressor::Zstd",
            Compressor::Snappy(_) => "Compressor::Snappy",
        })
    }
}

/// A compressor for `codec` writing into `out`.
pub fn compressor<W: Write>(codec: CompressionCodec, out: W) -> Result<Compressor<W>> {
    Ok(match codec {
        CompressionCodec::None => Compressor::None(out),
        CompressionCodec::Gzip | CompressionCodec::GzipOffloadDecompression => {
            Compressor::Gzip(GzEncoder::new(out, Compression::fast()))
        }
        CompressionCodec::Zstandard => {
            let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL)
                .map_err(|e| Error::io("starting zstd encoder", e))?;
            enc.include_checksum(true)
                .map_err(|e| Error::io("configuring zstd encoder", e))?;
            Compressor::Zstd(enc)
        }
        CompressionCodec::Snappy => {
            Compressor::Snappy(Box::new(snap::write::FrameEncoder::new(out)))
        }
        CompressionCodec::Invalid => {
            return Err(Error::InvalidFragment {
                fragment: "(codec)".into(),
                reason: "codec INVALID cannot be written".into(),
            });
        }
    })
}

impl<W: Write> Compressor<W> {
    /// Flushes the stream's end and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(enc) => enc.finish(),
            Compressor::Zstd(enc) => enc.finish(),
            Compressor::Snappy(enc) => enc.into_inner().map_err(|e| e.into_error()),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
            Compressor::Snappy(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.write_all(buf),
            Compressor::Gzip(w) => w.write_all(buf),
            Compressor::Zstd(w) => w.write_all(buf),
            Compressor::Snappy(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
            Compressor::Snappy(w) => w.flush(),
        }
    }
}

/// A decompressor for `codec` reading from `input`. Truncated input reads as an
/// `UnexpectedEof` or `InvalidData` error, never as a short, clean end.
pub fn decompressor<'a, R: BufRead + Send + 'a>(
    codec: CompressionCodec,
    input: R,
) -> Result<Box<dyn Read + Send + 'a>> {
    Ok(match codec {
        CompressionCodec::None => Box::new(input),
        CompressionCodec::Gzip | CompressionCodec::GzipOffloadDecompression => {
            Box::new(MultiGzDecoder::new(input))
        }
        CompressionCodec::Zstandard => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| Error::io("starting zstd decoder", e))?,
        ),
        CompressionCodec::Snappy => Box::new(snap::read::FrameDecoder::new(input)),
        CompressionCodec::Invalid => {
            return Err(Error::InvalidFragment {
                fragment: "(codec)".into(),
                reason: "codec INVALID cannot be read".into(),
            });
        }
    })
}

/// Compresses `data` whole (for tests and small payloads).
pub fn compress(codec: CompressionCodec, data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = compressor(codec, Vec::new())?;
    enc.write_all(data)
        .map_err(|e| Error::io("compressing", e))?;
    enc.finish().map_err(|e| Error::io("compressing", e))
}

/// Decompresses `data` whole (for tests and small payloads).
pub fn decompress(codec: CompressionCodec, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompressor(codec, data)?
        .read_to_end(&mut out)
        .map_err(|e| Error::Corrupt {
            path: "(buffer)".into(),
            codec: codec.as_str_name().into(),
            reason: e.to_string(),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [CompressionCodec; 4] = [
        CompressionCodec::None,
        CompressionCodec::Gzip,
        CompressionCodec::Zstandard,
        CompressionCodec::Snappy,
    ];

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .take(len)
            .collect()
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = sample(300_000);
        for codec in &CODECS[1..] {
            let full = compress(*codec, &data).expect("compress");
            for cut in [full.len() / 2, full.len() - 1] {
                let got = decompress(*codec, &full[..cut]);
                assert!(
                    got.is_err(),
                    "{codec:?} truncated at {cut}/{} read as ok",
                    full.len()
                );
            }
        }
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let data = sample(200_000);
        for codec in &CODECS[1..] {
            let mut full = compress(*codec, &data).expect("compress");
            let at = full.len() / 2;
            full[at] ^= 0x55;
            match decompress(*codec, &full) {
                Err(_) => {}
                Ok(out) => panic!(
                    "{codec:?}: corrupt stream decoded ({} bytes, same={})",
                    out.len(),
                    out == data
                ),
            }
        }
    }

    #[test]
    fn empty_content_round_trips() {
        for codec in CODECS {
            let enc = compress(codec, b"").expect("compress");
            assert_eq!(
                decompress(codec, &enc).expect("decompress"),
                b"",
                "{codec:?}"
            );
        }
    }

    #[test]
    fn standard_tools_read_our_files() {
        let data = sample(1_000_000);
        for (codec, tool, args) in [
            (CompressionCodec::Zstandard, "zstd", &["-d", "-c"][..]),
            (CompressionCodec::Gzip, "gzip", &["-d", "-c"][..]),
        ] {
            let encoded = compress(codec, &data).expect("compress");
            let mut child = std::process::Command::new(tool)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{tool} must be installed (scripts/test.sh installs it): {e}")
                });
            let mut stdin = child.stdin.take().expect("stdin");
            let writer = std::thread::spawn(move || stdin.write_all(&encoded));
            let out = child.wait_with_output().expect("tool runs");
            writer.join().expect("writer").expect("write to tool");
            assert!(out.status.success(), "{tool} failed");
            assert_eq!(out.stdout, data, "{tool} output differs");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..200_000), which in 0usize..4) {
            let codec = CODECS[which];
            let enc = compress(codec, &data).expect("compress");
            prop_assert_eq!(decompress(codec, &enc).expect("decompress"), data);
        }
    }
}
