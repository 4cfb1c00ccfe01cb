//! Label selectors: the text form, its parser and formatter, and matching.
//!
//! A selector is a comma-separated list of terms, all of which must hold:
//!
//! | text | meaning |
//! |---|---|
//! | `app=clicks` (or `app == clicks`) | label `app` has value `clicks` |
//! | `app!=clicks` | label `app` does not have value `clicks` |
//! | `app` | label `app` is present, with any value |
//! | `!app` | label `app` is absent |
//! | `region in (eu, us)` | `region` has value `eu` or `us` |
//! | `region notin (eu, us)` (or `not in`) | `region`, if present, has neither value |
//! | `name:prefix=acme/` | Folio and newer Gazette: `name` has a value beginning `acme/` |
//! | `name:prefix!=acme/` | no value of `name` begins with `acme/` |
//!
//! Terms on the same label are merged: `a=x, a=y` is `a in (x, y)`. Spacing around
//! operators and after commas is free. Journals also match the meta-labels `name` (the
//! journal name) and `prefix` (each directory prefix of it, ending in `/`), so
//! `prefix=acme/clicks/` selects every journal under `acme/clicks/`.

use std::fmt;
use std::str::FromStr;

use crate::label::{META_NAME, META_PREFIX};
use crate::proto::{Label, LabelSelector, LabelSet};
use crate::validation::ValidationError;

/// Suffix of a label name in a selector term that asks for prefix matching.
const PREFIX_SUFFIX: &str = ":prefix";

impl LabelSelector {
    /// Parses the text form. The error names the selector, the position and what was
    /// expected there.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Parser { text, pos: 0 }.parse()
    }

    /// Checks that both label sets are well-formed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(include) = &self.include {
            include.validate().map_err(|err| err.within("include"))?;
        }
        if let Some(exclude) = &self.exclude {
            exclude.validate().map_err(|err| err.within("exclude"))?;
        }
        Ok(())
    }

    /// Whether `set` has every included label (any of its selector values) and none of
    /// the excluded ones. An empty selector matches everything.
    pub fn matches(&self, set: &LabelSet) -> bool {
        let include = self.include.as_ref().map_or(&[][..], |s| &s.labels[..]);
        let exclude = self.exclude.as_ref().map_or(&[][..], |s| &s.labels[..]);
        by_name(include).all(|terms| any_term_matches(terms, set))
            && !by_name(exclude).any(|terms| any_term_matches(terms, set))
    }

    /// Whether the journal named `name`, with labels `labels`, is selected. The journal's
    /// meta-labels `name` and `prefix` take part in the match.
    pub fn matches_journal(&self, name: &str, labels: Option<&LabelSet>) -> bool {
        let mut set = journal_meta_labels(name);
        for label in labels.map_or(&[][..], |l| &l.labels[..]) {
            set.insert(label.clone());
        }
        self.matches(&set)
    }

    /// Whether the selector has no terms at all.
    pub fn is_empty(&self) -> bool {
        self.include.as_ref().is_none_or(|s| s.labels.is_empty())
            && self.exclude.as_ref().is_none_or(|s| s.labels.is_empty())
    }
}

impl FromStr for LabelSelector {
    type Err = ValidationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The canonical text form: included terms, then excluded ones, each group of terms on
/// one label written as a single term where it can be.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        for (labels, exclude) in [(&self.include, false), (&self.exclude, true)] {
            let labels = labels.as_ref().map_or(&[][..], |s| &s.labels[..]);
            for group in by_name(labels) {
                format_group(group, exclude, &mut terms);
            }
        }
        f.write_str(&terms.join(", "))
    }
}

/// The meta-labels of a journal: `name` = the journal name, and `prefix` = each
/// directory prefix of the name, ending in `/` (`a/`, `a/b/` for `a/b/c`).
pub fn journal_meta_labels(name: &str) -> LabelSet {
    let mut set = LabelSet::default();
    set.add_value(META_NAME, name);
    for (at, _) in name.match_indices('/') {
        set.add_value(META_PREFIX, &name[..=at]);
    }
    set
}

/// Splits a sorted label slice into runs that share a name.
fn by_name(labels: &[Label]) -> impl Iterator<Item = &[Label]> {
    labels.chunk_by(|a, b| a.name == b.name)
}

fn any_term_matches(terms: &[Label], set: &LabelSet) -> bool {
    let name = &terms[0].name;
    set.values_of(name).any(|value| {
        terms.iter().any(|term| {
            term.value.is_empty()
                || if term.prefix {
                    value.starts_with(&term.value)
                } else {
                    value == term.value
                }
        })
    })
}

fn format_group(group: &[Label], exclude: bool, out: &mut Vec<String>) {
    let name = &group[0].name;
    let plain = group.iter().all(|l| !l.prefix);
    match group {
        [only] if only.value.is_empty() => {
            out.push(if exclude {
                format!("!{name}")
            } else {
                name.clone()
            });
        }
        [_, _, ..] if plain => {
            let values: Vec<&str> = group.iter().map(|l| l.value.as_str()).collect();
            let op = if exclude { "notin" } else { "in" };
            out.push(format!("{name} {op} ({})", values.join(", ")));
        }
        _ => {
            for label in group {
                let suffix = if label.prefix { PREFIX_SUFFIX } else { "" };
                let op = if exclude { "!=" } else { "=" };
                out.push(format!("{name}{suffix}{op}{}", label.value));
            }
        }
    }
}

/// Characters of label names and values in selector text, beyond letters and digits.
/// Values may also hold `=`, so the meta-labels can select Hive-style journal names.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || "-_+/.".contains(c)
}

fn is_value_char(c: char) -> bool {
    is_name_char(c) || c == '='
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn parse(mut self) -> Result<LabelSelector, ValidationError> {
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        loop {
            self.skip_space();
            if self.rest().is_empty() {
                if !include.is_empty() || !exclude.is_empty() {
                    return Err(self.error("expected a term after ','"));
                }
                break;
            }
            self.term(&mut include, &mut exclude)?;
            self.skip_space();
            if self.rest().is_empty() {
                break;
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or the end of the selector"));
            }
        }
        let selector = LabelSelector {
            include: Some(normalize(include)),
            exclude: Some(normalize(exclude)),
        };
        selector
            .validate()
            .map_err(|err| err.within(format!("selector {:?}", self.text)))?;
        Ok(selector)
    }

    fn term(
        &mut self,
        include: &mut Vec<Label>,
        exclude: &mut Vec<Label>,
    ) -> Result<(), ValidationError> {
        if self.eat("!") {
            self.skip_space();
            let name = self.token(is_name_char, "a label name after '!'")?;
            exclude.push(Label::new(name, ""));
            return Ok(());
        }
        let name = self.token(is_name_char, "a label name")?;
        let prefix = self.eat(PREFIX_SUFFIX);
        self.skip_space();

        let rest = self.rest();
        if rest.starts_with("!=") {
            self.pos += 2;
            exclude.push(self.value_term(name, prefix)?);
        } else if rest.starts_with('=') {
            self.pos += if rest.starts_with("==") { 2 } else { 1 };
            include.push(self.value_term(name, prefix)?);
        } else if !prefix && self.keyword("in") {
            include.extend(self.set(&name)?);
        } else if !prefix && (self.keyword("notin") || self.not_in()) {
            exclude.extend(self.set(&name)?);
        } else if prefix {
            return Err(self.error("expected '=' or '!=' after ':prefix'"));
        } else if rest.is_empty() || rest.starts_with(',') {
            include.push(Label::new(name, ""));
        } else {
            return Err(self.error("expected '=', '!=', 'in', 'notin', ',' or the end"));
        }
        Ok(())
    }

    fn value_term(&mut self, name: String, prefix: bool) -> Result<Label, ValidationError> {
        self.skip_space();
        let value = self.token(is_value_char, &format!("a value for label {name:?}"))?;
        Ok(Label {
            name,
            value,
            prefix,
        })
    }

    /// `( value, value, ... )`
    fn set(&mut self, name: &str) -> Result<Vec<Label>, ValidationError> {
        self.skip_space();
        if !self.eat("(") {
            return Err(self.error(&format!("expected '(' to open the value set of {name:?}")));
        }
        let mut values = Vec::new();
        loop {
            self.skip_space();
            values.push(Label::new(
                name,
                self.token(is_value_char, "a value in the set")?,
            ));
            self.skip_space();
            if self.eat(")") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or ')' in the value set"));
            }
        }
    }

    fn not_in(&mut self) -> bool {
        let start = self.pos;
        if self.eat("not") && self.rest().starts_with(char::is_whitespace) {
            self.skip_space();
            if self.keyword("in") {
                return true;
            }
        }
        self.pos = start;
        false
    }

    /// Consumes `word` when it stands alone (followed by space or `(`).
    fn keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        let after = rest.get(word.len()..).unwrap_or("");
        if rest.starts_with(word)
            && (after.starts_with(char::is_whitespace) || after.starts_with('('))
        {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn token(&mut self, allowed: fn(char) -> bool, what: &str) -> Result<String, ValidationError> {
        let rest = self.rest();
        let len = rest.find(|c: char| !allowed(c)).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error(&format!("expected {what}")));
        }
        self.pos += len;
        Ok(rest[..len].to_owned())
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.rest().starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn error(&self, what: &str) -> ValidationError {
        let found = match self.rest().chars().next() {
            Some(c) => format!("found {c:?}"),
            None => "found the end".to_owned(),
        };
        ValidationError::new(format!(
            "{what} at column {} ({found})",
            self.text[..self.pos].chars().count() + 1
        ))
        .within(format!("selector {:?}", self.text))
    }
}

/// Sorts terms into set order and drops exact repeats (`a=x, a=x` means `a=x`).
fn normalize(mut labels: Vec<Label>) -> LabelSet {
    labels.sort_by(Label::order);
    labels.dedup();
    LabelSet { labels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn parses_every_form() {
        let sel = LabelSelector::parse(
            "app=clicks, region in (eu, us), env!=prod, !deprecated, tier notin (a,b), part, xx not in (c)",
        )
        .expect("valid");
        assert_eq!(
            sel.to_string(),
            "app=clicks, part, region in (eu, us), !deprecated, env!=prod, tier notin (a, b), xx!=c"
        );
        for text in [
            "aa == b",
            "aa= b",
            "aa =b",
            "aa==bb,cc",
            "  aa = bb ,  !cc  ",
        ] {
            LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let prefix = LabelSelector::parse("name:prefix=acme/, name:prefix!=acme/old").expect("ok");
        assert_eq!(
            prefix.to_string(),
            "name:prefix=acme/, name:prefix!=acme/old"
        );
        assert!(LabelSelector::parse("").expect("empty").is_empty());
    }

    #[test]
    fn matching() {
        let labels = set(&[("app", "clicks"), ("region", "eu")]);
        let cases = [
            ("app=clicks", true),
            ("app=views", false),
            ("app", true),
            ("!app", false),
            ("!zone", true),
            ("region in (us, eu)", true),
            ("region notin (us, eu)", false),
            ("region notin (us)", true),
            ("env!=prod", true),
            ("app=clicks, region=us", false),
            ("app:prefix=cl", true),
            ("app:prefix=vi", false),
            ("", true),
        ];
        for (text, want) in cases {
            let sel = LabelSelector::parse(text).expect(text);
            assert_eq!(sel.matches(&labels), want, "{text}");
        }
    }

    #[test]
    fn meta_labels() {
        let meta = journal_meta_labels("acme/clicks/part-000");
        assert_eq!(
            meta.values_of("prefix").collect::<Vec<_>>(),
            ["acme/", "acme/clicks/"]
        );
        let sel = LabelSelector::parse("prefix=acme/clicks/").expect("ok");
        assert!(sel.matches_journal("acme/clicks/part-000", None));
        assert!(!sel.matches_journal("acme/views/part-000", None));
        let by_name = LabelSelector::parse("name=acme/clicks/part-000").expect("ok");
        assert!(by_name.matches_journal("acme/clicks/part-000", None));
        let hive = LabelSelector::parse("name:prefix=logs/date=2026").expect("ok");
        assert!(hive.matches_journal("logs/date=2026-11-28", None));
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("app=", "expected a value for label \"app\" at column 5"),
            ("app=x,", "expected a term after ','"),
            ("app in eu", "expected '(' to open the value set"),
            ("app in (eu", "expected ',' or ')'"),
            ("app ~ x", "expected '=', '!=', 'in', 'notin'"),
            ("a=b c", "expected ',' or the end"),
            ("a:prefix", "expected '=' or '!=' after ':prefix'"),
            ("x=1", "labels[0].name"),
            ("app=a b", "expected ',' or the end"),
            ("app, app=x", "both an empty and a non-empty value"),
            ("!", "expected a label name after '!'"),
        ];
        for (text, want) in cases {
            let err = LabelSelector::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: got {err:?}, want {want:?}");
            assert!(
                err.contains(&format!("{text:?}")),
                "{err} names the selector"
            );
        }
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9._/-]{1,8}"
    }

    prop_compose! {
        fn term()(name in token(), value in proptest::option::of(token()),
                  prefix in any::<bool>(), exclude in any::<bool>()) -> (Label, bool) {
            let value = value.unwrap_or_default();
            let prefix = prefix && !value.is_empty();
            (Label { name, value, prefix }, exclude)
        }
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(terms in proptest::collection::vec(term(), 0..8)) {
            let mut include = Vec::new();
            let mut exclude = Vec::new();
            for (label, excluded) in terms {
                let side = if excluded { &mut exclude } else { &mut include };
                // A name may not have both an empty and a non-empty value on one side.
                if side.iter().any(|l: &Label| l.name == label.name
                    && (l.value.is_empty() != label.value.is_empty())) {
                    continue;
                }
                side.push(label);
            }
            let sel = LabelSelector { include: Some(normalize(include)), exclude: Some(normalize(exclude)) };
            prop_assume!(sel.validate().is_ok());
            let text = sel.to_string();
            let parsed = LabelSelector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&parsed, &sel, "{}", text);
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}
