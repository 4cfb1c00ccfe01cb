//! Journal spec validation, with Gazette's limits.
//!
//! | field | rule |
//! |---|---|
//! | `name` | a journal name ([`crate::journal_name`]) with no `;metadata` segment |
//! | `replication` | 1 to 5 |
//! | `labels` | a valid [`LabelSet`]; not the meta-labels `name` or `prefix`; `content-type` a MIME type |
//! | `fragment.length` | 1 KiB to 16 GiB |
//! | `fragment.compression_codec` | NONE, GZIP, ZSTANDARD, SNAPPY or GZIP_OFFLOAD_DECOMPRESSION (not with a first `file://` store) |
//! | `fragment.stores` | URLs with a known scheme, ending in `/` |
//! | `fragment.refresh_interval` | 1 s to 24 h |
//! | `fragment.flush_interval` | zero, or at least 1 min |
//! | `fragment.path_postfix_template` | a [`PathPostfixTemplate`] |
//! | `flags` | NOT_SPECIFIED, O_RDONLY, O_WRONLY or O_RDWR |
//! | `max_append_rate` | not negative |
//! | `durability` | REPLICATED or PERSISTED (Folio) |
//! | `fragment.persist_interval` | zero (the default, 20 ms), or 1 ms to 10 s (Folio) |

use std::time::Duration;

use crate::journal_name::validate_spec_name;
use crate::label::{META_NAME, META_PREFIX};
use crate::path_postfix::PathPostfixTemplate;
use crate::proto::{CompressionCodec, JournalSpec, LabelSet, journal_spec};
use crate::validation::ValidationError;

/// Largest replication factor of a journal.
pub const MAX_REPLICATION: i32 = 5;
/// Smallest target fragment length: 1 KiB.
pub const MIN_FRAGMENT_LENGTH: i64 = 1 << 10;
/// Largest target fragment length: 16 GiB.
pub const MAX_FRAGMENT_LENGTH: i64 = 1 << 34;
/// Shortest store refresh interval.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest store refresh interval.
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Shortest non-zero flush interval.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// The persist interval of a PERSISTED journal whose spec leaves it zero.
pub const DEFAULT_PERSIST_INTERVAL: Duration = Duration::from_millis(20);
/// Shortest non-zero persist interval.
pub const MIN_PERSIST_INTERVAL: Duration = Duration::from_millis(1);
/// Longest persist interval.
pub const MAX_PERSIST_INTERVAL: Duration = Duration::from_secs(10);
/// Schemes of fragment store URLs. `memory` is Folio's in-process store for tests.
pub const STORE_SCHEMES: [&str; 6] = ["s3", "gs", "azure", "azure-ad", "file", "memory"];

/// Label that, when present, must be a MIME media type.
pub const LABEL_CONTENT_TYPE: &str = "content-type";
/// Gazette's message-type label, which requires a content type.
pub const LABEL_MESSAGE_TYPE: &str = "app.gazette.dev/message-type";
/// Gazette's message-sub-type label, which requires a message type.
pub const LABEL_MESSAGE_SUB_TYPE: &str = "app.gazette.dev/message-sub-type";

impl JournalSpec {
    /// Checks every field; the error names the first offending field and its value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_spec_name(&self.name)?;
        if !(1..=MAX_REPLICATION).contains(&self.replication) {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected 1 <= replication <= {MAX_REPLICATION})",
                self.replication
            ))
            .within("replication"));
        }
        if let Some(labels) = &self.labels {
            validate_journal_labels(labels)?;
        }
        let fragment = self.fragment.as_ref().ok_or_else(|| {
            ValidationError::new("is missing (length, codec and refresh interval are required)")
                .within("fragment")
        })?;
        fragment.validate().map_err(|err| err.within("fragment"))?;
        validate_flags(self.flags)?;
        if self.max_append_rate < 0 {
            return Err(ValidationError::new(format!(
                "{} is negative (expected 0 for unlimited, or bytes per second)",
                self.max_append_rate
            ))
            .within("max_append_rate"));
        }
        if journal_spec::Durability::try_from(self.durability).is_err() {
            return Err(ValidationError::new(format!(
                "{} is not a durability (expected REPLICATED or PERSISTED)",
                self.durability
            ))
            .within("durability"));
        }
        Ok(())
    }

    /// Whether appends are acknowledged only once persisted (durability PERSISTED).
    pub fn is_persisted(&self) -> bool {
        self.durability() == journal_spec::Durability::Persisted
    }

    /// How long the primary of a PERSISTED journal gathers appends before persisting
    /// them: `fragment.persist_interval`, or [`DEFAULT_PERSIST_INTERVAL`] when zero.
    pub fn persist_interval(&self) -> Duration {
        self.fragment
            .as_ref()
            .and_then(|f| duration_of(f.persist_interval.as_ref(), "persist_interval").ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_PERSIST_INTERVAL)
    }

    /// Whether reads of this journal are allowed by its flags.
    pub fn may_read(&self) -> bool {
        !matches!(
            journal_spec::Flag::try_from(self.flags as i32),
            Ok(journal_spec::Flag::OWronly)
        )
    }

    /// Whether appends to this journal are allowed by its flags.
    pub fn may_write(&self) -> bool {
        !matches!(
            journal_spec::Flag::try_from(self.flags as i32),
            Ok(journal_spec::Flag::ORdonly)
        )
    }

    /// The parsed `fragment.path_postfix_template` (empty when there is no fragment
    /// spec), which says which files under `{store}{name}/` are this journal's.
    pub fn path_postfix(&self) -> Result<PathPostfixTemplate, ValidationError> {
        let text = self
            .fragment
            .as_ref()
            .map_or("", |f| f.path_postfix_template.as_str());
        PathPostfixTemplate::parse(text).map_err(|err| err.within("path_postfix_template"))
    }
}

impl journal_spec::Fragment {
    /// Checks length, codec, stores, intervals and the path-postfix template.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(MIN_FRAGMENT_LENGTH..=MAX_FRAGMENT_LENGTH).contains(&self.length) {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected {MIN_FRAGMENT_LENGTH} <= length <= {MAX_FRAGMENT_LENGTH})",
                self.length
            ))
            .within("length"));
        }
        let codec = match CompressionCodec::try_from(self.compression_codec) {
            Ok(CompressionCodec::Invalid) | Err(_) => {
                return Err(ValidationError::new(format!(
                    "{} is not a codec (expected NONE, GZIP, ZSTANDARD, SNAPPY or GZIP_OFFLOAD_DECOMPRESSION)",
                    self.compression_codec
                ))
                .within("compression_codec"));
            }
            Ok(codec) => codec,
        };
        for (index, store) in self.stores.iter().enumerate() {
            let scheme =
                validate_store_url(store).map_err(|e| e.within(format!("stores[{index}]")))?;
            if index == 0 && scheme == "file" && codec == CompressionCodec::GzipOffloadDecompression
            {
                return Err(ValidationError::new(format!(
                    "GZIP_OFFLOAD_DECOMPRESSION cannot be used with a first store of file:// ({store})"
                ))
                .within("compression_codec"));
            }
        }
        let refresh = duration_of(self.refresh_interval.as_ref(), "refresh_interval")?;
        if !(MIN_REFRESH_INTERVAL..=MAX_REFRESH_INTERVAL).contains(&refresh) {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected 1s <= refresh_interval <= 24h)",
                humantime::format_duration(refresh)
            ))
            .within("refresh_interval"));
        }
        duration_of(self.retention.as_ref(), "retention")?;
        let flush = duration_of(self.flush_interval.as_ref(), "flush_interval")?;
        if !flush.is_zero() && flush < MIN_FLUSH_INTERVAL {
            return Err(ValidationError::new(format!(
                "{} is too short (expected 0 to disable, or at least 1m)",
                humantime::format_duration(flush)
            ))
            .within("flush_interval"));
        }
        PathPostfixTemplate::parse(&self.path_postfix_template)
            .map_err(|err| err.within("path_postfix_template"))?;
        let persist = duration_of(self.persist_interval.as_ref(), "persist_interval")?;
        if !persist.is_zero() && !(MIN_PERSIST_INTERVAL..=MAX_PERSIST_INTERVAL).contains(&persist) {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected 0 for the default of 20ms, or 1ms <= persist_interval <= 10s)",
                humantime::format_duration(persist)
            ))
            .within("persist_interval"));
        }
        Ok(())
    }
}

/// Checks a fragment store URL: a known scheme, and a path ending in `/`. Returns the
/// scheme.
pub fn validate_store_url(store: &str) -> Result<String, ValidationError> {
    let url = url::Url::parse(store)
        .map_err(|err| ValidationError::new(format!("{store:?} is not a URL ({err})")))?;
    let scheme = url.scheme();
    if !STORE_SCHEMES.contains(&scheme) {
        return Err(ValidationError::new(format!(
            "{store:?} has unsupported scheme {scheme:?} (expected one of {})",
            STORE_SCHEMES.join(", ")
        )));
    }
    if scheme != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new(format!(
            "{store:?} names no bucket or container"
        )));
    }
    if !url.path().ends_with('/') {
        return Err(ValidationError::new(format!("{store:?} must end with '/'")));
    }
    Ok(scheme.to_owned())
}

fn validate_journal_labels(labels: &LabelSet) -> Result<(), ValidationError> {
    labels.validate()?;
    for reserved in [META_NAME, META_PREFIX] {
        if labels.value_of(reserved).is_some() {
            return Err(ValidationError::new(format!(
                "label {reserved:?} is reserved: it is derived from the journal name"
            ))
            .within("labels"));
        }
    }
    for single in [
        LABEL_CONTENT_TYPE,
        LABEL_MESSAGE_TYPE,
        LABEL_MESSAGE_SUB_TYPE,
    ] {
        if labels.values_of(single).nth(1).is_some() {
            return Err(
                ValidationError::new(format!("label {single:?} may have only one value"))
                    .within("labels"),
            );
        }
    }
    if let Some(content_type) = labels.value_of(LABEL_CONTENT_TYPE)
        && !is_media_type(content_type)
    {
        return Err(ValidationError::new(format!(
            "{content_type:?} is not a media type such as application/x-ndjson"
        ))
        .within(format!("labels.{LABEL_CONTENT_TYPE}")));
    }
    let has = |name| labels.value_of(name).is_some();
    if has(LABEL_MESSAGE_TYPE) && !has(LABEL_CONTENT_TYPE) {
        return Err(ValidationError::new(format!(
            "label {LABEL_MESSAGE_TYPE:?} requires a {LABEL_CONTENT_TYPE:?} label"
        ))
        .within("labels"));
    }
    if has(LABEL_MESSAGE_SUB_TYPE) && !has(LABEL_MESSAGE_TYPE) {
        return Err(ValidationError::new(format!(
            "label {LABEL_MESSAGE_SUB_TYPE:?} requires a {LABEL_MESSAGE_TYPE:?} label"
        ))
        .within("labels"));
    }
    Ok(())
}

/// `type/subtype`, each a non-empty RFC 2045 token (label values cannot hold parameters).
fn is_media_type(value: &str) -> bool {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    };
    matches!(value.split_once('/'), Some((t, s)) if is_token(t) && is_token(s))
}

fn validate_flags(flags: u32) -> Result<(), ValidationError> {
    match i32::try_from(flags)
        .ok()
        .and_then(|f| journal_spec::Flag::try_from(f).ok())
    {
        Some(_) => Ok(()),
        None => Err(ValidationError::new(format!(
            "{flags} is not a flag (expected NOT_SPECIFIED, O_RDONLY, O_WRONLY or O_RDWR)"
        ))
        .within("flags")),
    }
}

/// Converts a protobuf duration; an absent one is zero.
pub fn duration_of(
    value: Option<&prost_types::Duration>,
    field: &str,
) -> Result<Duration, ValidationError> {
    let Some(d) = value else {
        return Ok(Duration::ZERO);
    };
    // Protobuf's rule: |nanos| < 1s, with the sign of seconds.
    let well_formed = d.nanos.unsigned_abs() < 1_000_000_000
        && !(d.seconds > 0 && d.nanos < 0)
        && !(d.seconds < 0 && d.nanos > 0);
    if !well_formed {
        return Err(ValidationError::new(format!(
            "{{seconds: {}, nanos: {}}} is not a duration (expected |nanos| < 1000000000, with the sign of seconds)",
            d.seconds, d.nanos
        ))
        .within(field));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ValidationError::new(format!(
            "{} is negative (expected a duration >= 0)",
            format_proto_duration(d)
        ))
        .within(field));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A well-formed protobuf duration as text with its sign: `-5s`, `1m 30s`, `-250ms`.
pub fn format_proto_duration(d: &prost_types::Duration) -> String {
    let magnitude = Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs());
    let sign = if d.seconds < 0 || d.nanos < 0 {
        "-"
    } else {
        ""
    };
    format!("{sign}{}", humantime::format_duration(magnitude))
}

/// Converts to a protobuf duration.
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Label;

    pub(crate) fn valid_spec() -> JournalSpec {
        JournalSpec {
            name: "acme/clicks/part-000".into(),
            replication: 3,
            labels: Some(LabelSet::from_pairs([
                ("app", "clicks"),
                ("content-type", "application/x-ndjson"),
            ])),
            fragment: Some(journal_spec::Fragment {
                length: 512 << 20,
                compression_codec: CompressionCodec::Zstandard as i32,
                stores: vec!["s3://bucket/prefix/".into(), "file:///var/folio/".into()],
                refresh_interval: Some(proto_duration(Duration::from_secs(300))),
                retention: None,
                flush_interval: Some(proto_duration(Duration::from_secs(3600))),
                path_postfix_template: "date={date}".into(),
                persist_interval: None,
            }),
            flags: journal_spec::Flag::ORdwr as u32,
            max_append_rate: 0,
            suspend: None,
            durability: journal_spec::Durability::Replicated as i32,
        }
    }

    #[test]
    fn valid_spec_passes() {
        valid_spec().validate().expect("valid");
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutate = fn(&mut JournalSpec);
        let cases: Vec<(Mutate, &str, &str)> = vec![
            (|s| s.name = "a;b/c".into(), "name", "metadata segment"),
            (|s| s.name = "/abs".into(), "name", "cannot begin with '/'"),
            (|s| s.replication = 0, "replication", "0 is out of range"),
            (|s| s.replication = 6, "replication", "6 is out of range"),
            (
                |s| s.labels = Some(LabelSet::from_pairs([("name", "x")])),
                "labels",
                "reserved",
            ),
            (
                |s| s.labels = Some(LabelSet::from_pairs([("prefix", "x/")])),
                "labels",
                "reserved",
            ),
            (
                |s| s.labels = Some(LabelSet::from_pairs([("content-type", "not-a-type")])),
                "labels.content-type",
                "not a media type",
            ),
            (
                |s| {
                    s.labels = Some(LabelSet::from_pairs([(
                        "app.gazette.dev/message-type",
                        "Foo",
                    )]))
                },
                "labels",
                "requires a \"content-type\"",
            ),
            (
                |s| {
                    s.labels = Some(LabelSet {
                        labels: vec![Label::new("zz", "1"), Label::new("aa", "2")],
                    })
                },
                "labels[1]",
                "out of order",
            ),
            (|s| s.fragment = None, "fragment", "is missing"),
            (
                |s| s.fragment.as_mut().expect("f").length = 1023,
                "fragment.length",
                "1023 is out of range",
            ),
            (
                |s| s.fragment.as_mut().expect("f").length = (1 << 34) + 1,
                "fragment.length",
                "out of range",
            ),
            (
                |s| s.fragment.as_mut().expect("f").compression_codec = 0,
                "fragment.compression_codec",
                "not a codec",
            ),
            (
                |s| s.fragment.as_mut().expect("f").compression_codec = 9,
                "fragment.compression_codec",
                "9 is not a codec",
            ),
            (
                |s| s.fragment.as_mut().expect("f").stores = vec!["s3://bucket/no-slash".into()],
                "fragment.stores[0]",
                "must end with '/'",
            ),
            (
                |s| s.fragment.as_mut().expect("f").stores = vec!["ftp://host/x/".into()],
                "fragment.stores[0]",
                "unsupported scheme \"ftp\"",
            ),
            (
                |s| s.fragment.as_mut().expect("f").stores = vec!["not a url".into()],
                "fragment.stores[0]",
                "not a URL",
            ),
            (
                |s| {
                    let f = s.fragment.as_mut().expect("f");
                    f.stores = vec!["file:///tmp/x/".into()];
                    f.compression_codec = CompressionCodec::GzipOffloadDecompression as i32;
                },
                "fragment.compression_codec",
                "file://",
            ),
            (
                |s| s.fragment.as_mut().expect("f").refresh_interval = None,
                "fragment.refresh_interval",
                "out of range",
            ),
            (
                |s| {
                    s.fragment.as_mut().expect("f").refresh_interval =
                        Some(proto_duration(Duration::from_secs(90_000)))
                },
                "fragment.refresh_interval",
                "1day 1h is out of range",
            ),
            (
                |s| {
                    s.fragment.as_mut().expect("f").flush_interval =
                        Some(proto_duration(Duration::from_secs(30)))
                },
                "fragment.flush_interval",
                "too short",
            ),
            (
                |s| {
                    s.fragment.as_mut().expect("f").retention = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    })
                },
                "fragment.retention",
                "-1s is negative (expected a duration >= 0)",
            ),
            (
                |s| s.fragment.as_mut().expect("f").path_postfix_template = "{nope}".into(),
                "fragment.path_postfix_template",
                "unknown placeholder",
            ),
            (|s| s.flags = 3, "flags", "3 is not a flag"),
            (|s| s.durability = 2, "durability", "2 is not a durability"),
            (
                |s| {
                    s.fragment.as_mut().expect("f").persist_interval =
                        Some(proto_duration(Duration::from_secs(11)))
                },
                "fragment.persist_interval",
                "11s is out of range",
            ),
            (
                |s| s.max_append_rate = -5,
                "max_append_rate",
                "-5 is negative",
            ),
        ];
        for (mutate, field, why) in cases {
            let mut spec = valid_spec();
            mutate(&mut spec);
            let err = spec.validate().expect_err(field);
            assert!(
                err.field().starts_with(field),
                "want field {field}, got {err}"
            );
            assert!(err.to_string().contains(why), "want {why:?} in {err}");
        }
    }

    #[test]
    fn duration_errors_name_field_and_value_once() {
        let at = |seconds, nanos| {
            duration_of(
                Some(&prost_types::Duration { seconds, nanos }),
                "signatureTTL",
            )
            .expect_err("invalid")
            .to_string()
        };
        assert_eq!(
            at(-5, 0),
            "signatureTTL: -5s is negative (expected a duration >= 0)"
        );
        assert_eq!(
            at(-1, -500_000_000),
            "signatureTTL: -1s 500ms is negative (expected a duration >= 0)"
        );
        assert_eq!(
            at(0, -250_000_000),
            "signatureTTL: -250ms is negative (expected a duration >= 0)"
        );
        for (seconds, nanos) in [(1, 2_000_000_000), (1, -1), (-1, 1)] {
            let err = at(seconds, nanos);
            assert!(
                err.starts_with(&format!(
                    "signatureTTL: {{seconds: {seconds}, nanos: {nanos}}} is not a duration"
                )),
                "{err}"
            );
        }
        let ok = prost_types::Duration {
            seconds: 90,
            nanos: 5,
        };
        assert_eq!(
            duration_of(Some(&ok), "x").expect("valid"),
            Duration::new(90, 5)
        );
        assert_eq!(format_proto_duration(&ok), "1m 30s 5ns");
        assert_eq!(
            format_proto_duration(&prost_types::Duration::default()),
            "0s"
        );
    }

    #[test]
    fn gazette_path_postfix_templates_validate() {
        let mut spec = valid_spec();
        let gazette = r#"date={{ .Spool.FirstAppendTime.Format "2006-01-02" }}/hour={{ .Spool.FirstAppendTime.Format "15" }}"#;
        spec.fragment.as_mut().expect("f").path_postfix_template = gazette.into();
        spec.validate()
            .expect("Gazette's documented template is valid");
        let template = spec.path_postfix().expect("parses");
        assert_eq!(template.render(1_795_843_800), "date=2026-11-28/hour=05");
        assert_eq!(template.to_string(), gazette);

        spec.fragment.as_mut().expect("f").path_postfix_template = "date={{ .Spool.Begin }}".into();
        let err = spec.validate().expect_err("another field").to_string();
        assert!(
            err.starts_with(
                "fragment.path_postfix_template: unsupported action `{{ .Spool.Begin }}`"
            ),
            "{err}"
        );
        assert!(spec.path_postfix().is_err());
        spec.fragment = None;
        assert!(spec.path_postfix().expect("none").is_empty());
    }

    #[test]
    fn flags_gate_reads_and_writes() {
        let mut spec = valid_spec();
        spec.flags = journal_spec::Flag::ORdonly as u32;
        assert!(spec.may_read() && !spec.may_write());
        spec.flags = journal_spec::Flag::OWronly as u32;
        assert!(!spec.may_read() && spec.may_write());
        spec.flags = 0;
        assert!(spec.may_read() && spec.may_write());
    }
}
