//! Fragment file names.
//!
//! A fragment file lives at `{journal}/{path_postfix/}{begin:016x}-{end:016x}-{sha1:040x}{ext}`
//! relative to its store's root: lowercase hex, `begin` and `end` the journal offsets of the
//! span `[begin, end)` and `sha1` the SHA-1 of its uncompressed bytes. The name alone is the
//! fragment's index entry, so a bucket listing is a complete index (DESIGN.md, "Fragment
//! files"), and names are a frozen format: Gazette's brokers and readers share it.
//!
//! | codec | written | also read |
//! |---|---|---|
//! | `NONE` | `.raw` | |
//! | `GZIP` | `.gz` | `.gzip` |
//! | `ZSTANDARD` | `.zst` | `.zstandard` |
//! | `SNAPPY` | `.sz` | `.snappy` |
//! | `GZIP_OFFLOAD_DECOMPRESSION` | (none) | `.gzod` |
//!
//! Parsing is strict where Gazette is lenient (uppercase hex, short digit runs and unknown
//! extensions are refused): an object that does not parse is not a fragment, and the index
//! ignores it rather than guessing.
//!
//! The postfix is everything between `{journal}/` and the last `/`. A journal whose name
//! extends another's (`a/b` and `a/b/c`) shares its listing prefix, so `a/b/c`'s files read
//! as `a/b` files with postfix `c`; this is Gazette's layout too. Listing tells them apart:
//! a file is `a/b`'s only when its postfix is a rendering of `a/b`'s postfix template
//! ([`crate::list::list_fragments`], docs/fragment-ownership.md).

use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};

use crate::{Error, Result};

/// Hex digits of an offset in a file name.
const OFFSET_DIGITS: usize = 16;
/// Hex digits of a SHA-1 sum in a file name.
const SUM_DIGITS: usize = 40;

/// The file-name extension written for `codec`, with its leading dot.
///
/// `GZIP_OFFLOAD_DECOMPRESSION` has none, as Gazette writes it. `INVALID` gets `.invalid`,
/// which [`codec_from_extension`] does not accept: a fragment must have a real codec before
/// it is named (persisting refuses `INVALID`), and a name that cannot be read back is the
/// safe outcome when one slips through.
pub fn extension(codec: CompressionCodec) -> &'static str {
    match codec {
        CompressionCodec::None => ".raw",
        CompressionCodec::Gzip => ".gz",
        CompressionCodec::Zstandard => ".zst",
        CompressionCodec::Snappy => ".sz",
        CompressionCodec::GzipOffloadDecompression => "",
        CompressionCodec::Invalid => ".invalid",
    }
}

/// The codec of a file-name extension (with its leading dot), including Gazette's older
/// spellings; the empty extension is `GZIP_OFFLOAD_DECOMPRESSION`. Matching is exact:
/// `.GZ` is not an extension Folio or Gazette writes.
pub fn codec_from_extension(ext: &str) -> Option<CompressionCodec> {
    match ext {
        ".raw" => Some(CompressionCodec::None),
        ".gz" | ".gzip" => Some(CompressionCodec::Gzip),
        ".zst" | ".zstandard" => Some(CompressionCodec::Zstandard),
        ".sz" | ".snappy" => Some(CompressionCodec::Snappy),
        "" | ".gzod" => Some(CompressionCodec::GzipOffloadDecompression),
        _ => None,
    }
}

/// The path of `fragment`'s file relative to the store root:
/// `{journal}/{path_postfix/}{begin:016x}-{end:016x}-{sha1:040x}{ext}`.
///
/// `begin` and `end` must be non-negative for the name to parse back (a negative offset
/// prints as its two's complement).
pub fn format_fragment_path(fragment: &Fragment) -> String {
    let postfix_sep = if fragment.path_postfix.is_empty() {
        ""
    } else {
        "/"
    };
    format!(
        "{journal}/{postfix}{postfix_sep}{begin:016x}-{end:016x}-{sum}{ext}",
        journal = fragment.journal,
        postfix = fragment.path_postfix,
        begin = fragment.begin,
        end = fragment.end,
        sum = fragment.sha1(),
        ext = extension(fragment.codec()),
    )
}

/// Parses the store-relative object `path` of one of `journal`'s fragment files, as listed
/// under the prefix `{journal}/`.
///
/// The returned fragment has its journal, span, sum, codec and path postfix set; its
/// `backing_store` is empty and its `mod_time` zero, for the caller to fill from the listing.
///
/// # Errors
/// [`Error::FragmentName`], with a reason naming the part that is wrong, when `path` is not
/// under `{journal}/`, its postfix is not a clean relative path, or its file name is not
/// exactly `{16 hex}-{16 hex}-{40 hex}{ext}` with lowercase digits, a known extension and
/// `0 <= begin <= end`.
pub fn parse_fragment_path(journal: &str, path: &str) -> Result<Fragment> {
    let fail = |reason: String| Error::FragmentName {
        path: path.to_owned(),
        reason,
    };

    let rest = path
        .strip_prefix(journal)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| fail(format!("not under the journal's prefix \"{journal}/\"")))?;

    let (path_postfix, file) = match rest.rfind('/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => ("", rest),
    };
    // Any '/' after the journal prefix starts a postfix, so an empty one here means the
    // path had "//" or ended in '/'; neither formats back to the same path.
    if rest.contains('/')
        && path_postfix
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err(fail(format!(
            "path postfix {path_postfix:?} is not a clean relative path (it has an empty, '.' or '..' segment)"
        )));
    }
    if file.is_empty() {
        return Err(fail("the file name is empty".to_owned()));
    }

    // The name's hex fields hold no '.', so the extension starts at the first one; a second
    // dot makes the extension unknown rather than part of the sum.
    let (stem, ext) = file.split_at(file.find('.').unwrap_or(file.len()));
    let fields: Vec<&str> = stem.split('-').collect();
    let [begin, end, sum] = fields[..] else {
        return Err(fail(format!(
            "file name {file:?} is not <begin>-<end>-<sha1><ext> (it has {} dash-separated fields, expected 3)",
            fields.len()
        )));
    };
    let begin = parse_offset("begin offset", begin).map_err(&fail)?;
    let end = parse_offset("end offset", end).map_err(&fail)?;
    if !is_lower_hex(sum, SUM_DIGITS) {
        return Err(fail(format!(
            "SHA-1 sum {sum:?} is not {SUM_DIGITS} lowercase hex digits"
        )));
    }
    let sum = Sha1Sum::from_hex(sum).map_err(|err| fail(format!("SHA-1 sum: {err}")))?;
    let codec =
        codec_from_extension(ext).ok_or_else(|| fail(format!("unknown extension {ext:?}")))?;
    if end < begin {
        return Err(fail(format!("end 0x{end:x} is before begin 0x{begin:x}")));
    }

    Ok(Fragment {
        journal: journal.to_owned(),
        begin,
        end,
        sum: Some(sum),
        compression_codec: codec as i32,
        backing_store: String::new(),
        mod_time: 0,
        path_postfix: path_postfix.to_owned(),
    })
}

/// Parses one offset field: exactly 16 lowercase hex digits, at most `i64::MAX`.
fn parse_offset(what: &str, field: &str) -> std::result::Result<i64, String> {
    if !is_lower_hex(field, OFFSET_DIGITS) {
        return Err(format!(
            "{what} {field:?} is not {OFFSET_DIGITS} lowercase hex digits"
        ));
    }
    let value = u64::from_str_radix(field, 16)
        .map_err(|err| format!("{what} {field:?} is not a hex number: {err}"))?;
    i64::try_from(value).map_err(|_| format!("{what} 0x{field} is larger than i64::MAX"))
}

/// Whether `field` is exactly `digits` digits of `0-9a-f`.
fn is_lower_hex(field: &str, digits: usize) -> bool {
    field.len() == digits
        && field
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUM: &str = "0102030405060708090a0b0c0d0e0f1011121314";

    fn digest() -> [u8; 20] {
        std::array::from_fn(|i| i as u8 + 1)
    }

    fn reason(journal: &str, path: &str) -> String {
        match parse_fragment_path(journal, path) {
            Err(Error::FragmentName { path: got, reason }) => {
                assert_eq!(got, path, "the error names the object");
                reason
            }
            other => panic!("{path}: expected a FragmentName error, got {other:?}"),
        }
    }

    #[test]
    fn extensions_round_trip_and_accept_gazette_spellings() {
        let codecs = [
            CompressionCodec::None,
            CompressionCodec::Gzip,
            CompressionCodec::Zstandard,
            CompressionCodec::Snappy,
            CompressionCodec::GzipOffloadDecompression,
        ];
        for codec in codecs {
            assert_eq!(
                codec_from_extension(extension(codec)),
                Some(codec),
                "{codec:?}"
            );
        }
        assert_eq!(extension(CompressionCodec::GzipOffloadDecompression), "");
        assert_eq!(codec_from_extension(".gzip"), Some(CompressionCodec::Gzip));
        assert_eq!(
            codec_from_extension(".zstandard"),
            Some(CompressionCodec::Zstandard)
        );
        assert_eq!(
            codec_from_extension(".snappy"),
            Some(CompressionCodec::Snappy)
        );
        assert_eq!(
            codec_from_extension(".gzod"),
            Some(CompressionCodec::GzipOffloadDecompression)
        );
        for unknown in [".lz4", ".GZ", "gz", ".", ".raw.gz"] {
            assert_eq!(codec_from_extension(unknown), None, "{unknown}");
        }
        assert_eq!(
            codec_from_extension(extension(CompressionCodec::Invalid)),
            None
        );
    }

    #[test]
    fn valid_names() {
        // (journal, path, begin, end, codec, postfix)
        let table = [
            (
                "a/journal",
                format!("a/journal/date=2019-11-19/00000000499602d2-7fffffffffffffff-{SUM}.gz"),
                0x499602d2,
                i64::MAX,
                CompressionCodec::Gzip,
                "date=2019-11-19",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/0000000000000000-0000000000000400-{SUM}.raw"),
                0,
                0x400,
                CompressionCodec::None,
                "",
            ),
            (
                "acme/clicks",
                format!(
                    "acme/clicks/date=2026-11-28/hour=05/0000000000000400-0000000000000400-{SUM}.zst"
                ),
                0x400,
                0x400,
                CompressionCodec::Zstandard,
                "date=2026-11-28/hour=05",
            ),
            (
                "logs",
                format!("logs/00000000000000ff-0000000000010000-{SUM}.sz"),
                0xff,
                0x10000,
                CompressionCodec::Snappy,
                "",
            ),
            (
                "logs",
                format!("logs/0000000000000000-0000000000000001-{SUM}"),
                0,
                1,
                CompressionCodec::GzipOffloadDecompression,
                "",
            ),
            (
                "logs",
                format!("logs/0000000000000000-0000000000000001-{SUM}.gzod"),
                0,
                1,
                CompressionCodec::GzipOffloadDecompression,
                "",
            ),
            (
                "logs",
                format!("logs/0000000000000000-0000000000000001-{SUM}.gzip"),
                0,
                1,
                CompressionCodec::Gzip,
                "",
            ),
            (
                "logs",
                format!("logs/0000000000000000-0000000000000001-{SUM}.zstandard"),
                0,
                1,
                CompressionCodec::Zstandard,
                "",
            ),
            (
                "logs",
                format!("logs/v.1/0000000000000000-0000000000000001-{SUM}.snappy"),
                0,
                1,
                CompressionCodec::Snappy,
                "v.1",
            ),
        ];
        for (journal, path, begin, end, codec, postfix) in table {
            let f = parse_fragment_path(journal, &path).unwrap_or_else(|err| panic!("{err}"));
            let want = Fragment {
                journal: journal.to_owned(),
                begin,
                end,
                sum: Some(Sha1Sum::from_digest(digest())),
                compression_codec: codec as i32,
                backing_store: String::new(),
                mod_time: 0,
                path_postfix: postfix.to_owned(),
            };
            assert_eq!(f, want, "{path}");
        }
    }

    #[test]
    fn formats_gazette_example() {
        let f = Fragment {
            journal: "a/journal".to_owned(),
            begin: 1_234_567_890,
            end: i64::MAX,
            sum: Some(Sha1Sum::from_digest(digest())),
            compression_codec: CompressionCodec::Gzip as i32,
            path_postfix: "date=2019-11-19".to_owned(),
            ..Fragment::default()
        };
        assert_eq!(
            format_fragment_path(&f),
            format!("a/journal/date=2019-11-19/00000000499602d2-7fffffffffffffff-{SUM}.gz")
        );
        let f = Fragment {
            path_postfix: String::new(),
            compression_codec: CompressionCodec::GzipOffloadDecompression as i32,
            ..f
        };
        assert_eq!(
            format_fragment_path(&f),
            format!("a/journal/00000000499602d2-7fffffffffffffff-{SUM}")
        );
    }

    #[test]
    fn invalid_names() {
        let zero = "0000000000000000";
        let one = "0000000000000001";
        // (journal, path, what the reason must say)
        let table = [
            (
                "acme/clicks",
                format!("acme/other/{zero}-{one}-{SUM}.raw"),
                "not under the journal's prefix \"acme/clicks/\"",
            ),
            (
                "acme/clicks",
                format!("acme/clicksx/{zero}-{one}-{SUM}.raw"),
                "not under the journal's prefix",
            ),
            (
                "acme/clicks",
                format!("acme/clicks{zero}-{one}-{SUM}.raw"),
                "not under the journal's prefix",
            ),
            (
                "acme/clicks",
                format!("{zero}-{one}-{SUM}.raw"),
                "not under the journal's prefix",
            ),
            (
                "acme/clicks",
                format!("acme/clicks//{zero}-{one}-{SUM}.raw"),
                "path postfix \"\" is not a clean relative path",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/a//b/{zero}-{one}-{SUM}.raw"),
                "path postfix \"a//b\" is not a clean relative path",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/../{zero}-{one}-{SUM}.raw"),
                "path postfix \"..\" is not a clean relative path",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/./{zero}-{one}-{SUM}.raw"),
                "path postfix \".\" is not a clean relative path",
            ),
            (
                "acme/clicks",
                "acme/clicks/date=2026-11-28/".to_owned(),
                "the file name is empty",
            ),
            (
                "acme/clicks",
                "acme/clicks/README.md".to_owned(),
                "file name \"README.md\" is not <begin>-<end>-<sha1><ext> (it has 1 dash-separated fields, expected 3)",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}.raw"),
                "it has 2 dash-separated fields, expected 3",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}-x.raw"),
                "it has 4 dash-separated fields, expected 3",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}--{one}-{SUM}.raw"),
                "it has 4 dash-separated fields, expected 3",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/00zz000000000000-{one}-{SUM}.raw"),
                "begin offset \"00zz000000000000\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/000000000000000A-{one}-{SUM}.raw"),
                "begin offset \"000000000000000A\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/0-{one}-{SUM}.raw"),
                "begin offset \"0\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/00000000000000000-{one}-{SUM}.raw"),
                "begin offset \"00000000000000000\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/+000000000000000-{one}-{SUM}.raw"),
                "begin offset \"+000000000000000\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-1-{SUM}.raw"),
                "end offset \"1\" is not 16 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-ffffffffffffffff-{SUM}.raw"),
                "end offset 0xffffffffffffffff is larger than i64::MAX",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/8000000000000000-{one}-{SUM}.raw"),
                "begin offset 0x8000000000000000 is larger than i64::MAX",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/0000000000000020-0000000000000010-{SUM}.raw"),
                "end 0x10 is before begin 0x20",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{}.raw", &SUM[..38]),
                "SHA-1 sum \"0102030405060708090a0b0c0d0e0f10111213\" is not 40 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}00.raw"),
                "is not 40 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{}.raw", SUM.to_uppercase()),
                "is not 40 lowercase hex digits",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}.lz4"),
                "unknown extension \".lz4\"",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}.GZ"),
                "unknown extension \".GZ\"",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}.raw.gz"),
                "unknown extension \".raw.gz\"",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}."),
                "unknown extension \".\"",
            ),
            (
                "acme/clicks",
                format!("acme/clicks/{zero}-{one}-{SUM}.invalid"),
                "unknown extension \".invalid\"",
            ),
        ];
        for (journal, path, want) in table {
            let got = reason(journal, &path);
            assert!(
                got.contains(want),
                "{path}: reason {got:?} should contain {want:?}"
            );
        }
        let display = parse_fragment_path("logs", "logs/x")
            .expect_err("not a fragment")
            .to_string();
        assert!(display.contains("\"logs/x\""), "{display} names the object");
    }

    fn journal() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9_+=.-]{1,8}", 1..4)
            .prop_map(|segments| segments.join("/"))
            .prop_filter("valid journal name", |name| {
                folio_protocol::validate_journal_name(name).is_ok()
            })
    }

    fn postfix() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("date=2026-11-28/hour=05".to_owned()),
            proptest::collection::vec("[a-z]{1,6}=[a-z0-9-]{1,10}", 1..4)
                .prop_map(|segments| segments.join("/")),
        ]
    }

    fn codec() -> impl Strategy<Value = CompressionCodec> {
        prop_oneof![
            Just(CompressionCodec::None),
            Just(CompressionCodec::Gzip),
            Just(CompressionCodec::Zstandard),
            Just(CompressionCodec::Snappy),
            Just(CompressionCodec::GzipOffloadDecompression),
        ]
    }

    proptest! {
        // Names built from near-miss fields parse only now and then; more cases make the
        // canonical check below see a few dozen accepted ones.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn format_then_parse_is_identity(
            journal in journal(),
            a in 0..=i64::MAX,
            b in 0..=i64::MAX,
            digest in any::<[u8; 20]>(),
            codec in codec(),
            path_postfix in postfix(),
        ) {
            let f = Fragment {
                journal: journal.clone(),
                begin: a.min(b),
                end: a.max(b),
                sum: Some(Sha1Sum::from_digest(digest)),
                compression_codec: codec as i32,
                backing_store: String::new(),
                mod_time: 0,
                path_postfix,
            };
            let path = format_fragment_path(&f);
            prop_assert_eq!(parse_fragment_path(&journal, &path).map_err(|e| e.to_string()), Ok(f));
        }

        /// Every accepted name is canonical: it formats back to itself, except for Gazette's
        /// alternative extension spellings.
        #[test]
        fn accepted_names_are_canonical(
            postfix in "([a-z=.]{0,3}/){0,2}",
            begin in "[0-3][0-9a-f]{14,15}",
            end in "[3-7][0-9a-f]{14,15}",
            sum in "[0-9a-f]{40,41}",
            ext in prop_oneof![
                Just(""), Just(".raw"), Just(".gz"), Just(".gzip"), Just(".zst"), Just(".gzod"),
                Just(".snappy"), Just(".txt"),
            ],
        ) {
            let path = format!("logs/{postfix}{begin}-{end}-{sum}{ext}");
            if let Ok(f) = parse_fragment_path("logs", &path) {
                let formatted = format_fragment_path(&f);
                let aliased = matches!(ext, ".gzip" | ".snappy" | ".gzod");
                prop_assert!(aliased || formatted == path, "{} formats as {}", path, formatted);
            }
        }
    }
}
