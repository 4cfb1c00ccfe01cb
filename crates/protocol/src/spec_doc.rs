//! The YAML and JSON forms of journal specs, as operators write them.
//!
//! ```yaml
//! journals:
//!   - name: acme/clicks/part-000
//!     replication: 3
//!     labels:
//!       - { name: app, value: clicks }
//!     fragment:
//!       length: 512MiB           # or a plain byte count: 536870912
//!       compression_codec: ZSTANDARD
//!       stores: [s3://bucket/folio/]
//!       refresh_interval: 5m
//!       retention: 720h
//!       flush_interval: 1h
//!       path_postfix_template: date={date}/hour={hour}
//!       persist_interval: 20ms   # Folio: group commit of PERSISTED appends
//!     flags: O_RDWR
//!     max_append_rate: 0
//!     durability: REPLICATED     # Folio: or PERSISTED (acknowledged once in the store)
//! ```
//!
//! Field names are the protocol's, in snake_case. Durations are written like `250ms`,
//! `10m` or `1h 30m`; codecs and flags by their protocol names. Omitted fields take the
//! defaults below; a field the format does not know is an error that names it and its
//! line. After parsing, each spec is validated ([`JournalSpec::validate`]) and an error
//! names the journal and the field.
//!
//! | field | default |
//! |---|---|
//! | `replication` | 1 |
//! | `fragment.length` | 512 MiB |
//! | `fragment.compression_codec` | ZSTANDARD |
//! | `fragment.stores` | none (the broker's default store, where it has one) |
//! | `fragment.refresh_interval` | 5m |
//! | `fragment.retention`, `fragment.flush_interval` | 0 (forever, and no time-based roll) |
//! | `flags` | NOT_SPECIFIED (read and write) |
//! | `durability` | REPLICATED |
//! | `fragment.persist_interval` | 0 (20 ms, used only by PERSISTED journals) |

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::proto::{CompressionCodec, JournalSpec, Label, LabelSet, journal_spec};
use crate::spec::{duration_of, proto_duration};

/// A file of journal specs: `journals:` followed by a list of specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecsDocument {
    /// The journals the file declares.
    pub journals: Vec<JournalSpecDoc>,
}

/// One journal spec in its YAML / JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSpecDoc {
    /// Journal name.
    pub name: String,
    /// Replication factor.
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// Labels, as `{name, value}` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelDoc>,
    /// Fragment settings.
    #[serde(default)]
    pub fragment: FragmentDoc,
    /// Read / write flags.
    #[serde(default, skip_serializing_if = "is_default")]
    pub flags: FlagDoc,
    /// Append rate limit in bytes per second; 0 is unlimited.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_append_rate: i64,
    /// Suspension state; managed by brokers and passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<SuspendDoc>,
    /// When appends are acknowledged (Folio).
    #[serde(default, skip_serializing_if = "is_default")]
    pub durability: DurabilityDoc,
}

/// Durability names, as the protocol spells them.
#[allow(clippy::upper_case_acronyms, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DurabilityDoc {
    #[default]
    REPLICATED,
    PERSISTED,
}

/// A label in its YAML / JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDoc {
    /// Label name.
    pub name: String,
    /// Label value; empty when omitted.
    #[serde(default)]
    pub value: String,
}

/// Fragment settings in their YAML / JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FragmentDoc {
    /// Target uncompressed fragment size: bytes, or text such as `512MiB`.
    #[serde(with = "byte_size")]
    pub length: i64,
    /// Codec of new fragments.
    pub compression_codec: CodecDoc,
    /// Fragment store URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
    /// Store listing period.
    #[serde(with = "duration_text")]
    pub refresh_interval: Duration,
    /// Retention of persisted fragments; zero keeps them forever.
    #[serde(with = "duration_text")]
    pub retention: Duration,
    /// Time-based roll interval; zero disables it.
    #[serde(with = "duration_text")]
    pub flush_interval: Duration,
    /// Path postfix template such as `date={date}/hour={hour}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_postfix_template: String,
    /// Group-commit interval of a PERSISTED journal; zero is the default (20 ms).
    #[serde(with = "duration_text", skip_serializing_if = "Duration::is_zero")]
    pub persist_interval: Duration,
}

impl Default for FragmentDoc {
    fn default() -> Self {
        Self {
            length: 512 << 20,
            compression_codec: CodecDoc::ZSTANDARD,
            stores: Vec::new(),
            refresh_interval: Duration::from_secs(300),
            retention: Duration::ZERO,
            flush_interval: Duration::ZERO,
            path_postfix_template: String::new(),
            persist_interval: Duration::ZERO,
        }
    }
}

/// Codec names, as the protocol spells them.
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodecDoc {
    NONE,
    GZIP,
    ZSTANDARD,
    SNAPPY,
    GZIP_OFFLOAD_DECOMPRESSION,
}

/// Flag names, as the protocol spells them.
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FlagDoc {
    #[default]
    NOT_SPECIFIED,
    O_RDONLY,
    O_WRONLY,
    O_RDWR,
}

/// Suspension state in its YAML / JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendDoc {
    /// `NONE`, `PARTIAL` or `FULL`.
    pub level: SuspendLevelDoc,
    /// Write head at suspension.
    #[serde(default)]
    pub offset: i64,
}

/// Suspension levels, as the protocol spells them.
#[allow(clippy::upper_case_acronyms, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuspendLevelDoc {
    NONE,
    PARTIAL,
    FULL,
}

fn default_replication() -> i32 {
    1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl From<CodecDoc> for CompressionCodec {
    fn from(codec: CodecDoc) -> Self {
        match codec {
            CodecDoc::NONE => CompressionCodec::None,
            CodecDoc::GZIP => CompressionCodec::Gzip,
            CodecDoc::ZSTANDARD => CompressionCodec::Zstandard,
            CodecDoc::SNAPPY => CompressionCodec::Snappy,
            CodecDoc::GZIP_OFFLOAD_DECOMPRESSION => CompressionCodec::GzipOffloadDecompression,
        }
    }
}

impl JournalSpecDoc {
    /// The protocol spec this document declares, validated.
    pub fn to_spec(&self) -> Result<JournalSpec, Error> {
        let f = &self.fragment;
        let spec = JournalSpec {
            name: self.name.clone(),
            replication: self.replication,
            labels: (!self.labels.is_empty()).then(|| LabelSet {
                labels: self
                    .labels
                    .iter()
                    .map(|l| Label::new(&l.name, &l.value))
                    .collect(),
            }),
            fragment: Some(journal_spec::Fragment {
                length: f.length,
                compression_codec: CompressionCodec::from(f.compression_codec) as i32,
                stores: f.stores.clone(),
                refresh_interval: Some(proto_duration(f.refresh_interval)),
                retention: Some(proto_duration(f.retention)),
                flush_interval: Some(proto_duration(f.flush_interval)),
                path_postfix_template: f.path_postfix_template.clone(),
                persist_interval: (!f.persist_interval.is_zero())
                    .then(|| proto_duration(f.persist_interval)),
            }),
            flags: match self.flags {
                FlagDoc::NOT_SPECIFIED => journal_spec::Flag::NotSpecified,
                FlagDoc::O_RDONLY => journal_spec::Flag::ORdonly,
                FlagDoc::O_WRONLY => journal_spec::Flag::OWronly,
                FlagDoc::O_RDWR => journal_spec::Flag::ORdwr,
            } as u32,
            max_append_rate: self.max_append_rate,
            suspend: self.suspend.as_ref().map(|s| journal_spec::Suspend {
                level: match s.level {
                    SuspendLevelDoc::NONE => journal_spec::suspend::Level::None,
                    SuspendLevelDoc::PARTIAL => journal_spec::suspend::Level::Partial,
                    SuspendLevelDoc::FULL => journal_spec::suspend::Level::Full,
                } as i32,
                offset: s.offset,
            }),
            durability: match self.durability {
                DurabilityDoc::REPLICATED => journal_spec::Durability::Replicated,
                DurabilityDoc::PERSISTED => journal_spec::Durability::Persisted,
            } as i32,
        };
        spec.validate()
            .map_err(|err| err.within(format!("journal {:?}", self.name)))?;
        Ok(spec)
    }

    /// The document form of a valid spec.
    pub fn from_spec(spec: &JournalSpec) -> Result<Self, Error> {
        spec.validate()?;
        let f = spec.fragment.clone().unwrap_or_default();
        let codec = match CompressionCodec::try_from(f.compression_codec) {
            Ok(CompressionCodec::None) => CodecDoc::NONE,
            Ok(CompressionCodec::Gzip) => CodecDoc::GZIP,
            Ok(CompressionCodec::Snappy) => CodecDoc::SNAPPY,
            Ok(CompressionCodec::GzipOffloadDecompression) => CodecDoc::GZIP_OFFLOAD_DECOMPRESSION,
            // Validation rejected every other value.
            _ => CodecDoc::ZSTANDARD,
        };
        let flags = match journal_spec::Flag::try_from(spec.flags as i32) {
            Ok(journal_spec::Flag::ORdonly) => FlagDoc::O_RDONLY,
            Ok(journal_spec::Flag::OWronly) => FlagDoc::O_WRONLY,
            Ok(journal_spec::Flag::ORdwr) => FlagDoc::O_RDWR,
            _ => FlagDoc::NOT_SPECIFIED,
        };
        Ok(Self {
            name: spec.name.clone(),
            replication: spec.replication,
            labels: spec
                .labels
                .iter()
                .flat_map(|set| &set.labels)
                .map(|l| LabelDoc {
                    name: l.name.clone(),
                    value: l.value.clone(),
                })
                .collect(),
            fragment: FragmentDoc {
                length: f.length,
                compression_codec: codec,
                stores: f.stores,
                refresh_interval: duration_of(f.refresh_interval.as_ref(), "refresh_interval")?,
                retention: duration_of(f.retention.as_ref(), "retention")?,
                flush_interval: duration_of(f.flush_interval.as_ref(), "flush_interval")?,
                path_postfix_template: f.path_postfix_template,
                persist_interval: duration_of(f.persist_interval.as_ref(), "persist_interval")?,
            },
            flags,
            max_append_rate: spec.max_append_rate,
            suspend: spec.suspend.as_ref().map(|s| SuspendDoc {
                level: match journal_spec::suspend::Level::try_from(s.level) {
                    Ok(journal_spec::suspend::Level::Partial) => SuspendLevelDoc::PARTIAL,
                    Ok(journal_spec::suspend::Level::Full) => SuspendLevelDoc::FULL,
                    _ => SuspendLevelDoc::NONE,
                },
                offset: s.offset,
            }),
            durability: match spec.durability() {
                journal_spec::Durability::Replicated => DurabilityDoc::REPLICATED,
                journal_spec::Durability::Persisted => DurabilityDoc::PERSISTED,
            },
        })
    }
}

impl SpecsDocument {
    /// Parses a `journals:` YAML document and validates every spec.
    pub fn from_yaml(text: &str) -> Result<Vec<JournalSpec>, Error> {
        parse_yaml::<Self>(text)?.to_specs()
    }

    /// Parses a `{"journals": [...]}` JSON document and validates every spec.
    pub fn from_json(text: &str) -> Result<Vec<JournalSpec>, Error> {
        parse_json::<Self>(text)?.to_specs()
    }

    /// The validated specs of this document, in order.
    pub fn to_specs(&self) -> Result<Vec<JournalSpec>, Error> {
        self.journals.iter().map(JournalSpecDoc::to_spec).collect()
    }

    /// The document form of `specs`.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = &'a JournalSpec>) -> Result<Self, Error> {
        let journals = specs
            .into_iter()
            .map(JournalSpecDoc::from_spec)
            .collect::<Result<_, _>>()?;
        Ok(Self { journals })
    }

    /// YAML text of this document.
    pub fn to_yaml(&self) -> String {
        yaml_text(self)
    }

    /// Pretty JSON text of this document.
    pub fn to_json(&self) -> String {
        json_text(self)
    }
}

/// A document parsed from YAML; the error is the parser's (field and line).
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_yaml_ng::from_str(text).map_err(|e| Error::Document(e.to_string()))
}

/// A document parsed from JSON; the error is the parser's.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Document(e.to_string()))
}

/// YAML text of a spec document (which holds only strings, numbers and lists).
pub(crate) fn yaml_text<T: Serialize>(doc: &T) -> String {
    serde_yaml_ng::to_string(doc).expect("spec documents hold only strings, numbers and lists")
}

/// Pretty JSON text of a spec document.
pub(crate) fn json_text<T: Serialize>(doc: &T) -> String {
    serde_json::to_string_pretty(doc).expect("spec documents hold only strings, numbers and lists")
}

/// Parses a byte size: a number of bytes, or a number with a unit `KiB`, `MiB`, `GiB` or
/// `TiB` (`1048576`, `64KiB`, `512MiB`, `1GiB`, `1TiB`). `None` when it is not a size or
/// exceeds `i64::MAX` bytes.
pub fn parse_byte_size(text: &str) -> Option<i64> {
    byte_size::parse(text).ok()
}

/// Durations as text: `250ms`, `10m`, `1h 30m`.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.is_zero() {
            return s.serialize_str("0s");
        }
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|err| {
            D::Error::custom(format!(
                "{text:?} is not a duration such as 250ms, 10m or 1h ({err})"
            ))
        })
    }
}

/// Byte sizes as a number, or text with a unit: `1024`, `64KiB`, `512MiB`, `1GiB`, `1TiB`.
///
/// Read with a visitor rather than an untagged enum, so that an error is raised while the
/// `length` value itself is being read and points at `fragment.length`, not `fragment`.
mod byte_size {
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    const EXPECTED: &str = "a size such as 1048576, 64KiB, 512MiB, 1GiB or 1TiB";

    pub(super) fn serialize<S: Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*n)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_i64<E: Error>(self, n: i64) -> Result<i64, E> {
            Ok(n)
        }

        fn visit_u64<E: Error>(self, n: u64) -> Result<i64, E> {
            i64::try_from(n).map_err(|_| E::custom(too_large(&n.to_string())))
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<i64, E> {
            parse(text).map_err(E::custom)
        }
    }

    fn too_large(text: &str) -> String {
        format!(
            "{text:?} is too large (the largest size is {} bytes)",
            i64::MAX
        )
    }

    /// Bytes of `text`, or why it is not a size.
    pub(super) fn parse(text: &str) -> Result<i64, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            _ => return Err(format!("{text:?} is not {EXPECTED}")),
        };
        if digits.is_empty() {
            return Err(format!("{text:?} is not {EXPECTED}"));
        }
        // Only digits remain, so a failed parse is an overflow.
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .ok_or_else(|| too_large(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "\
journals:
  - name: acme/clicks/part-000
    replication: 3
    labels:
      - { name: app, value: clicks }
    fragment:
      length: 512MiB
      compression_codec: SNAPPY
      stores: [s3://bucket/folio/]
      refresh_interval: 5m
      retention: 720h
      flush_interval: 1h
      path_postfix_template: date={date}/hour={hour}
    flags: O_RDWR
  - name: acme/views/part-000
";

    #[test]
    fn parses_the_documented_example() {
        let specs = SpecsDocument::from_yaml(EXAMPLE).expect("valid");
        assert_eq!(specs.len(), 2);
        let f = specs[0].fragment.as_ref().expect("fragment");
        assert_eq!(f.length, 512 << 20);
        assert_eq!(f.compression_codec, CompressionCodec::Snappy as i32);
        assert_eq!(f.flush_interval.as_ref().map(|d| d.seconds), Some(3600));
        let defaults = specs[1].fragment.as_ref().expect("fragment");
        assert_eq!(specs[1].replication, 1);
        assert_eq!(
            defaults.compression_codec,
            CompressionCodec::Zstandard as i32
        );
        assert_eq!(
            defaults.refresh_interval.as_ref().map(|d| d.seconds),
            Some(300)
        );
    }

    /// Folio's durability tier: PERSISTED with its group-commit interval, listed back as
    /// written; a REPLICATED journal (the default) lists neither field, as Gazette's do.
    #[test]
    fn durability_and_persist_interval_round_trip() {
        let yaml = "journals:\n  - name: acme/orders\n    durability: PERSISTED\n    fragment: { persist_interval: 5ms }\n  - name: acme/clicks\n";
        let specs = SpecsDocument::from_yaml(yaml).expect("valid");
        assert!(specs[0].is_persisted());
        assert_eq!(specs[0].durability, 1);
        assert_eq!(specs[0].persist_interval(), Duration::from_millis(5));
        assert!(!specs[1].is_persisted());
        assert_eq!(
            specs[1].persist_interval(),
            crate::spec::DEFAULT_PERSIST_INTERVAL
        );
        let doc = SpecsDocument::from_specs(&specs).expect("doc");
        let listed = doc.to_yaml();
        assert!(listed.contains("durability: PERSISTED"), "{listed}");
        assert!(listed.contains("persist_interval: 5ms"), "{listed}");
        assert_eq!(listed.matches("durability").count(), 1, "{listed}");
        assert_eq!(listed.matches("persist_interval").count(), 1, "{listed}");
        assert_eq!(SpecsDocument::from_yaml(&listed).expect("again"), specs);
        assert_eq!(
            SpecsDocument::from_json(&doc.to_json()).expect("json"),
            specs
        );

        // A value no Folio knows, as a newer writer might store it: refused by name.
        let mut odd = specs[0].clone();
        odd.durability = 7;
        let err = odd.validate().expect_err("durability 7").to_string();
        assert!(
            err.contains("durability: 7 is not a durability (expected REPLICATED or PERSISTED)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_name_the_field_and_line() {
        let text = "journals:\n  - name: acme/x\n    replicaton: 3\n";
        let err = SpecsDocument::from_yaml(text)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("unknown field `replicaton`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                "    fragment: { compression_codec: ZSTD }\n",
                "unknown variant `ZSTD`",
            ),
            (
                "    fragment: { refresh_interval: soon }\n",
                "\"soon\" is not a duration",
            ),
            ("    fragment: { length: 12 parsecs }\n", "is not a size"),
            (
                "    fragment: { length: 100 }\n",
                "fragment.length: 100 is out of range",
            ),
            ("    replication: 9\n", "replication: 9 is out of range"),
            ("    flags: O_APPEND\n", "unknown variant `O_APPEND`"),
            ("    durability: FAST\n", "unknown variant `FAST`"),
            (
                "    fragment: { persist_interval: 20s }\n",
                "fragment.persist_interval: 20s is out of range",
            ),
            (
                "    fragment: { persist_interval: 500us }\n",
                "fragment.persist_interval: 500us is out of range",
            ),
        ];
        for (extra, want) in cases {
            let text = format!("journals:\n  - name: acme/clicks\n{extra}");
            let err = SpecsDocument::from_yaml(&text)
                .expect_err(extra)
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let err = SpecsDocument::from_yaml("journals:\n  - name: /bad\n").expect_err("name");
        assert!(err.to_string().contains("journal \"/bad\".name"), "{err}");
    }

    #[test]
    fn sizes_reach_tib_and_errors_point_at_fragment_length() {
        assert_eq!(parse_byte_size("1TiB"), Some(1 << 40));
        assert_eq!(parse_byte_size("3 TiB"), Some(3 << 40));
        assert_eq!(parse_byte_size("8388607TiB"), Some(8_388_607 << 40));
        assert_eq!(parse_byte_size("8388608TiB"), None, "over i64::MAX");
        assert_eq!(parse_byte_size("99999999999999999999"), None);
        assert_eq!(parse_byte_size("TiB"), None);
        assert_eq!(parse_byte_size("1PiB"), None);

        let yaml = |length: &str| {
            format!("journals:\n  - name: acme/clicks\n    fragment:\n      length: {length}\n")
        };
        // 1TiB is a size; the fragment length limit (16GiB) is what rejects it.
        assert!(SpecsDocument::from_yaml(&yaml("16GiB")).is_ok());
        let err = SpecsDocument::from_yaml(&yaml("1TiB"))
            .expect_err("over the limit")
            .to_string();
        assert!(
            err.contains("fragment.length: 1099511627776 is out of range"),
            "{err}"
        );
        for (bad, why) in [
            ("12 parsecs", "\"12 parsecs\" is not a size such as"),
            ("1.5GiB", "\"1.5GiB\" is not a size such as"),
            ("8388608TiB", "\"8388608TiB\" is too large"),
            ("9223372036854775808", "too large"),
        ] {
            let err = SpecsDocument::from_yaml(&yaml(bad))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("fragment.length: "), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
            assert_eq!(err.matches("length").count(), 1, "{bad}: {err}");
        }
    }

    /// Gazette's documented template, as operators copy it from Gazette's docs.
    const GAZETTE_TEMPLATE: &str = r#"date={{ .Spool.FirstAppendTime.Format "2006-01-02" }}/hour={{ .Spool.FirstAppendTime.Format "15" }}"#;

    /// `journals list -o yaml` (or `-o json`) prints a Go template exactly as it was
    /// applied, and the printed form applies again to the same spec.
    #[test]
    fn go_templates_round_trip_verbatim() {
        for template in [
            GAZETTE_TEMPLATE,
            "date={{.Spool.FirstAppendTime.Format \"2006-01-02\"}}",
            "h={{- .Spool.FirstAppendTime.Format `15` -}}",
            "date={date}/hour={hour}",
        ] {
            let yaml = format!(
                "journals:\n  - name: acme/x\n    fragment:\n      path_postfix_template: '{template}'\n"
            );
            let specs = SpecsDocument::from_yaml(&yaml).expect(template);
            let stored = |specs: &[JournalSpec]| {
                specs[0]
                    .fragment
                    .as_ref()
                    .expect("fragment")
                    .path_postfix_template
                    .clone()
            };
            assert_eq!(stored(&specs), template, "applied verbatim");
            let doc = SpecsDocument::from_specs(&specs).expect("doc");
            let listed_yaml = doc.to_yaml();
            let listed_json = doc.to_json();
            let back = SpecsDocument::from_yaml(&listed_yaml).expect(&listed_yaml);
            assert_eq!(stored(&back), template, "listed as YAML: {listed_yaml}");
            let back = SpecsDocument::from_json(&listed_json).expect(&listed_json);
            assert_eq!(stored(&back), template, "listed as JSON: {listed_json}");
        }
        // Unquoted, as docs/specs.md shows it: YAML needs quotes only before a leading `{`.
        let yaml = format!(
            "journals:\n  - name: acme/x\n    fragment:\n      path_postfix_template: {GAZETTE_TEMPLATE}\n"
        );
        let specs = SpecsDocument::from_yaml(&yaml).expect("unquoted");
        assert_eq!(
            specs[0].fragment.as_ref().expect("f").path_postfix_template,
            GAZETTE_TEMPLATE
        );
    }

    #[test]
    fn json_form() {
        let specs = SpecsDocument::from_yaml(EXAMPLE).expect("valid");
        let json = SpecsDocument::from_specs(&specs).expect("doc").to_json();
        assert!(json.contains("\"compression_codec\": \"SNAPPY\""), "{json}");
        assert!(json.contains("\"refresh_interval\": \"5m\""), "{json}");
        assert_eq!(SpecsDocument::from_json(&json).expect("json"), specs);
    }

    fn codec() -> impl Strategy<Value = CodecDoc> {
        prop_oneof![
            Just(CodecDoc::NONE),
            Just(CodecDoc::GZIP),
            Just(CodecDoc::ZSTANDARD),
            Just(CodecDoc::SNAPPY),
            Just(CodecDoc::GZIP_OFFLOAD_DECOMPRESSION),
        ]
    }

    fn flag() -> impl Strategy<Value = FlagDoc> {
        prop_oneof![
            Just(FlagDoc::NOT_SPECIFIED),
            Just(FlagDoc::O_RDONLY),
            Just(FlagDoc::O_WRONLY),
            Just(FlagDoc::O_RDWR),
        ]
    }

    prop_compose! {
        fn spec_doc()(
            name in "[a-z]{2,6}(/[a-z0-9][a-z0-9=._-]{0,5}){1,3}",
            replication in 1..=5i32,
            labels in proptest::collection::btree_map("[a-z]{2,8}", "[a-z0-9.]{0,8}", 0..4),
            length in 1024i64..=(1i64 << 34),
            codec in codec(),
            stores in proptest::collection::vec("s3://[a-z]{3,8}/([a-z]{1,5}/)?", 0..3),
            refresh in 1u64..=86_400,
            retention_ms in 0u64..10_000_000_000,
            flush in prop_oneof![Just(0u64), 60u64..100_000],
            template in prop_oneof![
                Just(String::new()),
                Just("date={date}/hour={hour}".to_owned()),
                Just(GAZETTE_TEMPLATE.to_owned()),
                Just("{{.Spool.FirstAppendTime.Format `2006/01`}}".to_owned()),
            ],
            flags in flag(),
            rate in 0i64..1_000_000_000,
            persisted in any::<bool>(),
            persist_ms in prop_oneof![Just(0u64), 1u64..=10_000],
        ) -> JournalSpecDoc {
            JournalSpecDoc {
                name,
                replication,
                labels: labels.into_iter().map(|(name, value)| LabelDoc { name, value }).collect(),
                fragment: FragmentDoc {
                    length,
                    compression_codec: codec,
                    stores,
                    refresh_interval: Duration::from_secs(refresh),
                    retention: Duration::from_millis(retention_ms),
                    flush_interval: Duration::from_secs(flush),
                    path_postfix_template: template,
                    persist_interval: Duration::from_millis(persist_ms),
                },
                flags,
                max_append_rate: rate,
                suspend: None,
                durability: if persisted { DurabilityDoc::PERSISTED } else { DurabilityDoc::REPLICATED },
            }
        }
    }

    proptest! {
        #[test]
        fn yaml_round_trip(doc in spec_doc()) {
            let spec = doc.to_spec().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let text = SpecsDocument::from_specs([&spec]).expect("valid").to_yaml();
            let back = SpecsDocument::from_yaml(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
            prop_assert_eq!(back, vec![spec]);
        }
    }
}
