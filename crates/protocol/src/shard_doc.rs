//! The YAML and JSON forms of shard specs, as operators write them.
//!
//! ```yaml
//! shards:
//!   - id: sum-000
//!     sources:
//!       - journal: sums/chunks/part-000
//!         min_offset: 0            # optional
//!     recovery_log_prefix: sums/recovery
//!     hint_prefix: /folio/hints
//!     max_txn_duration: 1s
//!     min_txn_duration: 0s         # optional
//!     hot_standbys: 1
//!     labels:
//!       - { name: app, value: stream-sum }
//!     disable: false               # optional
//! ```
//!
//! Field names are the protocol's, in snake_case; durations are written like `250ms` or
//! `1s`. Omitted fields are zero (`max_txn_duration` must be given); a field the format
//! does not know is an error that names it and its line. Each spec is validated
//! ([`ShardSpec::validate`]) and an error names the shard and the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::consumer::{ShardSpec, shard_spec};
use crate::proto::{Label, LabelSet};
use crate::spec::{duration_of, proto_duration};
use crate::spec_doc::{LabelDoc, duration_text, json_text, parse_json, parse_yaml, yaml_text};

/// A file of shard specs: `shards:` followed by a list of specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardsDocument {
    /// The shards the file declares.
    pub shards: Vec<ShardSpecDoc>,
}

/// One source journal of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    /// The journal.
    pub journal: String,
    /// Where reading starts when the shard has no checkpoint for it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_offset: i64,
}

/// One shard spec in its YAML / JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpecDoc {
    /// Shard id.
    pub id: String,
    /// Source journals.
    pub sources: Vec<SourceDoc>,
    /// The recovery log is `{recovery_log_prefix}/{id}`.
    pub recovery_log_prefix: String,
    /// Keyspace prefix of recovery hints.
    pub hint_prefix: String,
    /// Older hints kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hint_backups: i32,
    /// Longest transaction.
    #[serde(with = "duration_text")]
    pub max_txn_duration: Duration,
    /// Shortest transaction.
    #[serde(
        default,
        with = "duration_text",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub min_txn_duration: Duration,
    /// Processing is switched off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
    /// Standbys that follow the recovery log, ready to take over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hot_standbys: u32,
    /// Labels, as `{name, value}` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelDoc>,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ShardSpecDoc {
    /// The protocol spec this document declares, validated.
    pub fn to_spec(&self) -> Result<ShardSpec, Error> {
        let spec = ShardSpec {
            id: self.id.clone(),
            sources: self
                .sources
                .iter()
                .map(|s| shard_spec::Source {
                    journal: s.journal.clone(),
                    min_offset: s.min_offset,
                })
                .collect(),
            recovery_log_prefix: self.recovery_log_prefix.clone(),
            hint_prefix: self.hint_prefix.clone(),
            hint_backups: self.hint_backups,
            max_txn_duration: Some(proto_duration(self.max_txn_duration)),
            min_txn_duration: Some(proto_duration(self.min_txn_duration)),
            disable: self.disable,
            hot_standbys: self.hot_standbys,
            labels: (!self.labels.is_empty()).then(|| LabelSet {
                labels: self
                    .labels
                    .iter()
                    .map(|l| Label::new(&l.name, &l.value))
                    .collect(),
            }),
            ..ShardSpec::default()
        };
        spec.validate()
            .map_err(|err| err.within(format!("shard {:?}", self.id)))?;
        Ok(spec)
    }

    /// The document form of a valid spec.
    pub fn from_spec(spec: &ShardSpec) -> Result<Self, Error> {
        spec.validate()?;
        Ok(Self {
            id: spec.id.clone(),
            sources: spec
                .sources
                .iter()
                .map(|s| SourceDoc {
                    journal: s.journal.clone(),
                    min_offset: s.min_offset,
                })
                .collect(),
            recovery_log_prefix: spec.recovery_log_prefix.clone(),
            hint_prefix: spec.hint_prefix.clone(),
            hint_backups: spec.hint_backups,
            max_txn_duration: duration_of(spec.max_txn_duration.as_ref(), "max_txn_duration")?,
            min_txn_duration: duration_of(spec.min_txn_duration.as_ref(), "min_txn_duration")?,
            disable: spec.disable,
            hot_standbys: spec.hot_standbys,
            labels: spec
                .labels
                .iter()
                .flat_map(|set| &set.labels)
                .map(|l| LabelDoc {
                    name: l.name.clone(),
                    value: l.value.clone(),
                })
                .collect(),
        })
    }
}

impl ShardsDocument {
    /// Parses a `shards:` YAML document and validates every spec.
    pub fn from_yaml(text: &str) -> Result<Vec<ShardSpec>, Error> {
        parse_yaml::<Self>(text)?.to_specs()
    }

    /// Parses a `{"shards": [...]}` JSON document and validates every spec.
    pub fn from_json(text: &str) -> Result<Vec<ShardSpec>, Error> {
        parse_json::<Self>(text)?.to_specs()
    }

    /// The validated specs of this document, in order.
    pub fn to_specs(&self) -> Result<Vec<ShardSpec>, Error> {
        self.shards.iter().map(ShardSpecDoc::to_spec).collect()
    }

    /// The document form of `specs`.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = &'a ShardSpec>) -> Result<Self, Error> {
        let shards = specs
            .into_iter()
            .map(ShardSpecDoc::from_spec)
            .collect::<Result<_, _>>()?;
        Ok(Self { shards })
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
shards:
  - id: sum-000
    sources:
      - journal: sums/chunks/part-000
        min_offset: 10
    recovery_log_prefix: sums/recovery
    hint_prefix: /folio/hints
    max_txn_duration: 1s
    min_txn_duration: 20ms
    hot_standbys: 1
    labels:
      - { name: app, value: stream-sum }
"#;

    #[test]
    fn the_documented_example_round_trips() {
        let specs = ShardsDocument::from_yaml(EXAMPLE).expect("parses");
        assert_eq!(specs.len(), 1);
        let spec = &specs[0];
        assert_eq!(spec.sources[0].min_offset, 10);
        assert_eq!(spec.hot_standbys, 1);
        assert_eq!(
            spec.min_txn_duration,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 20_000_000
            })
        );
        let doc = ShardsDocument::from_specs(&specs).expect("document");
        assert_eq!(
            ShardsDocument::from_yaml(&doc.to_yaml()).expect("yaml"),
            specs
        );
        assert_eq!(
            ShardsDocument::from_json(&doc.to_json()).expect("json"),
            specs
        );
    }

    #[test]
    fn bad_documents_name_the_field() {
        let unknown = EXAMPLE.replace("hot_standbys: 1", "hot_standby: 1");
        let err = ShardsDocument::from_yaml(&unknown).expect_err("unknown field");
        assert!(err.to_string().contains("hot_standby"), "{err}");
        let zero = EXAMPLE.replace("max_txn_duration: 1s", "max_txn_duration: 0s");
        let err = ShardsDocument::from_yaml(&zero).expect_err("zero max");
        assert!(
            err.to_string()
                .contains("shard \"sum-000\".max_txn_duration"),
            "{err}"
        );
        let bad = EXAMPLE.replace("1s", "soon");
        let err = ShardsDocument::from_yaml(&bad).expect_err("bad duration");
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
    }
}
