//! Shard spec validation (`consumer.ShardSpec`), with Gazette's rules where it has them.
//!
//! | field | rule |
//! |---|---|
//! | `id` | 4 to 512 bytes of letters, digits and `-_+/.` (Gazette's token rule), forming a clean relative path (no empty, `.` or `..` segment, no leading or trailing `/`), as the keyspace layout needs |
//! | `sources` | at least one; each journal a valid journal name, listed once; `min_offset` not negative |
//! | `recovery_log_prefix` | a valid journal name (the log is `{prefix}/{id}`) |
//! | `hint_prefix` | starts with `/`, does not end with `/` (a keyspace prefix) |
//! | `hint_backups` | 0 to 16 |
//! | `max_txn_duration` | above zero |
//! | `min_txn_duration` | zero or more, at most `max_txn_duration` |
//! | `hot_standbys` | 0 to 4 (a route holds at most 5 members) |
//! | `labels` | valid labels |

use std::collections::BTreeSet;

use crate::consumer::ShardSpec;
use crate::journal_name::validate_journal_name;
use crate::spec::{MAX_REPLICATION, duration_of};
use crate::validation::{
    TOKEN_SYMBOLS, ValidationError, validate_alphabet, validate_path_component,
};

/// Shortest shard id, as Gazette's.
pub const MIN_SHARD_ID_LEN: usize = 4;

/// Longest shard id, as Gazette's.
pub const MAX_SHARD_ID_LEN: usize = 512;

/// Checks a shard id (see the module documentation).
pub fn validate_shard_id(id: &str) -> Result<(), ValidationError> {
    validate_alphabet(id, TOKEN_SYMBOLS, MIN_SHARD_ID_LEN, MAX_SHARD_ID_LEN)?;
    validate_path_component(id, MIN_SHARD_ID_LEN, MAX_SHARD_ID_LEN)
}

/// Most `hint_backups`.
pub const MAX_HINT_BACKUPS: i32 = 16;

impl ShardSpec {
    /// Checks every field; the error names the first offending field and its value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_shard_id(&self.id).map_err(|e| e.within("id"))?;
        if self.sources.is_empty() {
            return Err(
                ValidationError::new("is empty (expected at least one source journal)")
                    .within("sources"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let within = |e: ValidationError| e.within(format!("sources[{i}]"));
            validate_journal_name(&source.journal).map_err(within)?;
            if !seen.insert(source.journal.as_str()) {
                return Err(within(
                    ValidationError::new(format!("{:?} is listed twice", source.journal))
                        .within("journal"),
                ));
            }
            if source.min_offset < 0 {
                return Err(within(
                    ValidationError::new(format!("{} is negative", source.min_offset))
                        .within("min_offset"),
                ));
            }
        }
        validate_journal_name(&format!("{}/{}", self.recovery_log_prefix, self.id)).map_err(
            |e| {
                ValidationError::new(format!(
                    "{:?} with the id does not make a journal name: {e}",
                    self.recovery_log_prefix
                ))
                .within("recovery_log_prefix")
            },
        )?;
        if !self.hint_prefix.starts_with('/') || self.hint_prefix.ends_with('/') {
            return Err(ValidationError::new(format!(
                "{:?} must start with '/' and not end with '/'",
                self.hint_prefix
            ))
            .within("hint_prefix"));
        }
        if !(0..=MAX_HINT_BACKUPS).contains(&self.hint_backups) {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected 0 <= hint_backups <= {MAX_HINT_BACKUPS})",
                self.hint_backups
            ))
            .within("hint_backups"));
        }
        let max = duration_of(self.max_txn_duration.as_ref(), "max_txn_duration")?;
        if max.is_zero() {
            return Err(
                ValidationError::new("is zero (expected a duration above zero)")
                    .within("max_txn_duration"),
            );
        }
        let min = duration_of(self.min_txn_duration.as_ref(), "min_txn_duration")?;
        if min > max {
            return Err(
                ValidationError::new(format!("{min:?} is above max_txn_duration {max:?}"))
                    .within("min_txn_duration"),
            );
        }
        if self.hot_standbys >= MAX_REPLICATION as u32 {
            return Err(ValidationError::new(format!(
                "{} is out of range (expected 0 <= hot_standbys <= {})",
                self.hot_standbys,
                MAX_REPLICATION - 1
            ))
            .within("hot_standbys"));
        }
        if let Some(labels) = &self.labels {
            labels.validate().map_err(|e| e.within("labels"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::shard_spec::Source;

    fn valid() -> ShardSpec {
        ShardSpec {
            id: "sum-000".into(),
            sources: vec![Source {
                journal: "sums/in/part-000".into(),
                min_offset: 0,
            }],
            recovery_log_prefix: "sums/recovery".into(),
            hint_prefix: "/folio/hints".into(),
            max_txn_duration: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..ShardSpec::default()
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        valid().validate().expect("valid");
        type Breaks = fn(&mut ShardSpec);
        let cases: Vec<(Breaks, &str)> = vec![
            (|s| s.id = String::new(), "id"),
            (|s| s.id = "a b c".into(), "id"),
            // Shorter than Gazette's 4 bytes.
            (|s| s.id = "one".into(), "id"),
            // Gazette's tokens have no `=`.
            (|s| s.id = "a=b-c".into(), "id"),
            (|s| s.id = "/abcd".into(), "id"),
            (|s| s.id = "ab//cd".into(), "id"),
            (|s| s.sources.clear(), "sources"),
            (
                |s| s.sources[0].journal = "/bad".into(),
                "sources[0].journal",
            ),
            (
                |s| {
                    let again = s.sources[0].clone();
                    s.sources.push(again);
                },
                "sources[1].journal",
            ),
            (|s| s.sources[0].min_offset = -1, "sources[0].min_offset"),
            (
                |s| s.recovery_log_prefix = String::new(),
                "recovery_log_prefix",
            ),
            (|s| s.hint_prefix = "hints".into(), "hint_prefix"),
            (|s| s.hint_backups = 17, "hint_backups"),
            (|s| s.max_txn_duration = None, "max_txn_duration"),
            (
                |s| {
                    s.min_txn_duration = Some(prost_types::Duration {
                        seconds: 2,
                        nanos: 0,
                    })
                },
                "min_txn_duration",
            ),
            (|s| s.hot_standbys = 5, "hot_standbys"),
        ];
        for (break_it, field) in cases {
            let mut spec = valid();
            break_it(&mut spec);
            let err = spec.validate().expect_err(field);
            assert!(
                err.field().starts_with(field) || err.to_string().starts_with(field),
                "{field}: {err}"
            );
        }
    }
}
