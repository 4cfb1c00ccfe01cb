//! Journal names: Gazette's rules.
//!
//! A journal name is 4 to 512 bytes of letters, digits and `-_+/.=`, a clean relative
//! path (`acme/clicks/part-000`). Read and append requests may carry a `;suffix`
//! metadata segment after the name, which is ignored for routing; specs may not.

use crate::validation::{ValidationError, validate_path_component};

/// Shortest journal name, in bytes.
pub const MIN_JOURNAL_NAME_LEN: usize = 4;
/// Longest journal name, in bytes.
pub const MAX_JOURNAL_NAME_LEN: usize = 512;

/// Splits `name;meta` into `("name", ";meta")`; without a `;` the second part is empty.
pub fn split_meta(journal: &str) -> (&str, &str) {
    match journal.find(';') {
        Some(at) => journal.split_at(at),
        None => (journal, ""),
    }
}

/// Validates a journal name as it may appear in a read or append request: the name,
/// optionally followed by a `;metadata` path segment.
pub fn validate_journal_name(journal: &str) -> Result<(), ValidationError> {
    let (name, meta) = split_meta(journal);
    validate_path_component(name, MIN_JOURNAL_NAME_LEN, MAX_JOURNAL_NAME_LEN)
        .map_err(|err| err.within("journal"))?;
    if let Some(meta) = meta.strip_prefix(';') {
        validate_path_component(meta, 1, MAX_JOURNAL_NAME_LEN)
            .map_err(|err| err.within("journal metadata segment"))?;
    }
    Ok(())
}

/// Validates a journal name as a spec's `name`: no metadata segment.
pub fn validate_spec_name(name: &str) -> Result<(), ValidationError> {
    let (_, meta) = split_meta(name);
    if !meta.is_empty() {
        return Err(ValidationError::new(format!(
            "{name:?} has a metadata segment {meta:?}, which specs cannot have"
        ))
        .within("name"));
    }
    validate_path_component(name, MIN_JOURNAL_NAME_LEN, MAX_JOURNAL_NAME_LEN)
        .map_err(|err| err.within("name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let valid = [
            "a/b/c",
            "acme/clicks/part-000",
            "abcd",
            "foo/bar=baz/part+1",
            "日本語/ジャーナル",
            "with.dots/and_underscores",
            "logs;suffix",
            "logs;a/b",
        ];
        for name in valid {
            assert!(
                validate_journal_name(name).is_ok(),
                "{name} should be valid"
            );
        }
        let invalid = [
            ("abc", "invalid length 3"),
            ("/abs/path", "cannot begin with '/'"),
            ("a//b/c", "clean path"),
            ("a/./b", "clean path"),
            ("a/../b", "clean path"),
            ("trailing/", "clean path"),
            ("has space", "invalid character ' '"),
            ("has#hash", "invalid character '#'"),
            ("tab\there", "invalid character '\\t'"),
            ("logs;", "journal metadata segment"),
            ("logs;x y", "invalid character ' '"),
        ];
        for (name, why) in invalid {
            let err = validate_journal_name(name).expect_err(name).to_string();
            assert!(err.contains(why), "{name}: {err} should mention {why}");
            assert!(err.contains("journal"), "{err} names the field");
        }
        let long = "a".repeat(513);
        assert!(
            validate_journal_name(&long)
                .expect_err("too long")
                .to_string()
                .contains("513")
        );
        assert!(validate_journal_name(&"a".repeat(512)).is_ok());
    }

    #[test]
    fn spec_names_have_no_metadata() {
        let err = validate_spec_name("logs;suffix").expect_err("meta");
        assert_eq!(err.field(), "name");
        assert!(validate_spec_name("logs/part-1").is_ok());
    }

    #[test]
    fn split_meta_splits_at_first_semicolon() {
        assert_eq!(split_meta("a/b;c;d"), ("a/b", ";c;d"));
        assert_eq!(split_meta("a/b"), ("a/b", ""));
    }
}
