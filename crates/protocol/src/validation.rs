//! Validation errors that say which field is wrong, with which value, and why.

use std::fmt;

/// A rule broken by a value. `context` is the path of the field, outermost first
/// (for example `fragment` then `length`), so the message reads
/// `fragment.length: 12 is out of range (expected 1024 <= length <= 17179869184)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    context: Vec<String>,
    message: String,
}

impl ValidationError {
    /// A new error with no field context yet.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            context: Vec::new(),
            message: message.into(),
        }
    }

    /// Prefixes the field path with `field` (the enclosing field).
    #[must_use]
    pub fn within(mut self, field: impl Into<String>) -> Self {
        self.context.insert(0, field.into());
        self
    }

    /// The dotted path of the offending field, empty when the value itself is at fault.
    pub fn field(&self) -> String {
        self.context.join(".")
    }

    /// What is wrong, without the field path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field(), self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

/// Token alphabet beyond letters and digits, as Gazette defines it. Every symbol sorts
/// after `#`, which Folio (like Gazette) uses as a separator in assignment keys.
pub(crate) const TOKEN_SYMBOLS: &str = "-_+/.";
/// Path components additionally allow `=` (Hive-style `key=value` segments).
pub(crate) const PATH_SYMBOLS: &str = "-_+/.=";

/// Checks that `value` has a length (in bytes) within `[min, max]` and uses only
/// letters, digits and the given symbols.
pub(crate) fn validate_alphabet(
    value: &str,
    symbols: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    let len = value.len();
    if len < min || len > max {
        return Err(ValidationError::new(format!(
            "{value:?} has invalid length {len} (expected {min} <= length <= {max})"
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_alphabetic() || c.is_numeric() || symbols.contains(*c)))
    {
        return Err(ValidationError::new(format!(
            "{value:?} has invalid character {bad:?} (allowed: letters, digits and {symbols:?})"
        )));
    }
    Ok(())
}

/// A token: letters, digits and `-_+/.`.
pub(crate) fn validate_token(value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    validate_alphabet(value, TOKEN_SYMBOLS, min, max)
}

/// A path component: a token that may also hold `=`, is a clean relative path (no empty,
/// `.` or `..` segments, no trailing `/`) and does not begin with `/`.
pub(crate) fn validate_path_component(
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    validate_alphabet(value, PATH_SYMBOLS, min, max)?;
    if value.is_empty() {
        return Ok(());
    }
    if value.starts_with('/') {
        return Err(ValidationError::new(format!(
            "{value:?} cannot begin with '/'"
        )));
    }
    let clean = !value.ends_with('/')
        && value
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."));
    if !clean {
        return Err(ValidationError::new(format!(
            "{value:?} must be a clean path (no empty, '.' or '..' segments and no trailing '/')"
        )));
    }
    Ok(())
}
