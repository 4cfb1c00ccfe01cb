//! Fragment path-postfix templates.
//!
//! A journal spec's `fragment.path_postfix_template` names the directory segment placed
//! between the journal name and each fragment's file name, rendered from the UTC time of
//! the fragment's first append, so a bucket reads as a Hive-partitioned data lake:
//!
//! ```
//! use folio_protocol::PathPostfixTemplate;
//! let t = PathPostfixTemplate::parse("date={date}/hour={hour}").unwrap();
//! // 2026-11-28T05:30:00Z
//! assert_eq!(t.render(1_795_843_800), "date=2026-11-28/hour=05");
//! ```
//!
//! Placeholders: `{date}` (`YYYY-MM-DD`), `{year}`, `{month}`, `{day}`, `{hour}`,
//! `{minute}` (zero-padded). Everything else is copied; `{{` and `}}` write a brace.
//! The rendered text must be a clean relative path of letters, digits and `-_+/.=`.
//! Gazette writes these as Go templates; Folio uses this smaller language instead
//! (docs/wire-protocol.md).

use std::fmt;

use crate::validation::{ValidationError, validate_path_component};

/// A parsed path-postfix template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathPostfixTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Date,
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

impl Field {
    const ALL: [(&'static str, Field); 6] = [
        ("date", Field::Date),
        ("year", Field::Year),
        ("month", Field::Month),
        ("day", Field::Day),
        ("hour", Field::Hour),
        ("minute", Field::Minute),
    ];
}

impl PathPostfixTemplate {
    /// Parses `text`; the empty template renders nothing.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if c == '{' {
                let close = rest.find('}').ok_or_else(|| {
                    ValidationError::new(format!("{text:?} has an unclosed '{{'"))
                })?;
                let name = &rest[1..close];
                let field = Field::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(
                    || {
                        ValidationError::new(format!(
                            "{text:?} has unknown placeholder {{{name}}} (known: date, year, month, day, hour, minute)"
                        ))
                    },
                )?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(field));
                rest = &rest[close + 1..];
            } else if c == '}' {
                return Err(ValidationError::new(format!(
                    "{text:?} has an unopened '}}'"
                )));
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let template = Self { parts };
        // Any time renders to the same shape of path, so one rendering checks them all.
        validate_path_component(&template.render(0), 0, 512)?;
        Ok(template)
    }

    /// Whether the template renders nothing.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Renders the template for a first append at `unix_seconds` (UTC).
    pub fn render(&self, unix_seconds: i64) -> String {
        let days = unix_seconds.div_euclid(86_400);
        let secs = unix_seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(Field::Date) => {
                    out.push_str(&format!("{year:04}-{month:02}-{day:02}"));
                }
                Part::Field(Field::Year) => out.push_str(&format!("{year:04}")),
                Part::Field(Field::Month) => out.push_str(&format!("{month:02}")),
                Part::Field(Field::Day) => out.push_str(&format!("{day:02}")),
                Part::Field(Field::Hour) => out.push_str(&format!("{:02}", secs / 3600)),
                Part::Field(Field::Minute) => out.push_str(&format!("{:02}", secs % 3600 / 60)),
            }
        }
        out
    }
}

impl fmt::Display for PathPostfixTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(&text.replace('{', "{{").replace('}', "}}"))?,
                Part::Field(field) => {
                    let name = Field::ALL
                        .iter()
                        .find(|(_, f)| f == field)
                        .map_or("", |(n, _)| n);
                    write!(f, "{{{name}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dates() {
        let t = PathPostfixTemplate::parse("date={date}/hour={hour}").expect("valid");
        assert_eq!(t.render(0), "date=1970-01-01/hour=00");
        assert_eq!(t.render(951_782_400), "date=2000-02-29/hour=00");
        assert_eq!(t.render(1_795_843_800), "date=2026-11-28/hour=05");
        let all =
            PathPostfixTemplate::parse("y={year}/m={month}/d={day}/{hour}{minute}").expect("ok");
        assert_eq!(all.render(1_795_843_800), "y=2026/m=11/d=28/0530");
        assert_eq!(all.to_string(), "y={year}/m={month}/d={day}/{hour}{minute}");
        assert!(PathPostfixTemplate::parse("").expect("empty").is_empty());
    }

    #[test]
    fn rejects_bad_templates() {
        for (text, want) in [
            ("date={dat}", "unknown placeholder {dat}"),
            ("date={date", "unclosed"),
            ("a}", "unopened"),
            ("/abs={date}", "cannot begin with '/'"),
            ("a//{date}", "clean path"),
            ("has space", "invalid character"),
        ] {
            let err = PathPostfixTemplate::parse(text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
