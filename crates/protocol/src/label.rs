//! Labels and label sets: Gazette's rules.
//!
//! A label name is a token of 2 to 64 bytes; a value is a token of up to 1024 bytes.
//! A [`LabelSet`] is sorted by name then value, with no duplicates, and a name never has
//! both an empty and a non-empty value. Journal specs may not carry the reserved
//! meta-labels `name` and `prefix`: those are derived from the journal name
//! (see [`crate::selector::journal_meta_labels`]).

use std::cmp::Ordering;

use crate::proto::{Label, LabelSet};
use crate::validation::{ValidationError, validate_path_component, validate_token};

/// Shortest label name, in bytes.
pub const MIN_LABEL_LEN: usize = 2;
/// Longest label name, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;

/// Meta-label holding a journal's name.
pub const META_NAME: &str = "name";
/// Meta-label holding each directory prefix of a journal's name, ending in `/`.
pub const META_PREFIX: &str = "prefix";

impl Label {
    /// A label with `name` and `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            prefix: false,
        }
    }

    /// Checks the name and value alphabets and lengths. Values of the meta-labels
    /// `name` and `prefix` are journal paths, so they may also hold `=`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_token(&self.name, MIN_LABEL_LEN, MAX_LABEL_LEN)
            .map_err(|err| err.within("name"))?;
        let value = if self.name == META_NAME || self.name == META_PREFIX {
            validate_path_component(self.value.trim_end_matches('/'), 0, MAX_LABEL_VALUE_LEN)
        } else {
            validate_token(&self.value, 0, MAX_LABEL_VALUE_LEN)
        };
        value.map_err(|err| err.within("value"))
    }

    /// Sort order of labels within a set: name, then value, then exact before prefix.
    pub fn order(&self, other: &Self) -> Ordering {
        (&self.name, &self.value, self.prefix).cmp(&(&other.name, &other.value, other.prefix))
    }
}

impl LabelSet {
    /// Builds a sorted, de-duplicated set from `(name, value)` pairs.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut set = LabelSet::default();
        for (name, value) in pairs {
            set.add_value(name, value);
        }
        set
    }

    /// Checks every label, and that the set is sorted and unique and no name has both an
    /// empty and a non-empty value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (index, label) in self.labels.iter().enumerate() {
            label
                .validate()
                .map_err(|err| err.within(format!("labels[{index}]")))?;
            let Some(prev) = index.checked_sub(1).map(|at| &self.labels[at]) else {
                continue;
            };
            if prev.order(label) != Ordering::Less {
                return Err(ValidationError::new(format!(
                    "label {}={:?} is out of order or repeated after {}={:?} (a set must be sorted by name, then value, with no duplicates)",
                    label.name, label.value, prev.name, prev.value
                ))
                .within(format!("labels[{index}]")));
            }
            if prev.name == label.name && prev.value.is_empty() {
                return Err(ValidationError::new(format!(
                    "label {:?} has both an empty and a non-empty value ({:?})",
                    label.name, label.value
                ))
                .within(format!("labels[{index}]")));
            }
        }
        Ok(())
    }

    /// Every value of label `name`, in order.
    pub fn values_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let start = self.labels.partition_point(|l| l.name.as_str() < name);
        let len = self.labels[start..]
            .iter()
            .take_while(|l| l.name == name)
            .count();
        self.labels[start..start + len]
            .iter()
            .map(|l| l.value.as_str())
    }

    /// The first value of label `name`, if it is present.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        self.values_of(name).next()
    }

    /// Adds `name=value`, keeping other values of `name`; a no-op if already present.
    pub fn add_value(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.insert(Label::new(name, value));
    }

    /// Inserts `label` at its sorted place; a no-op if already present.
    pub fn insert(&mut self, label: Label) {
        if let Err(at) = self.labels.binary_search_by(|probe| probe.order(&label)) {
            self.labels.insert(at, label);
        }
    }

    /// Sets `name` to the single value `value`, replacing any other values of `name`.
    pub fn set_value(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.remove(&name);
        self.add_value(name, value);
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.labels.retain(|l| l.name != name);
    }

    /// The union of two sets: every label name of either; where both have a name, the
    /// values of `self` win. This is how `union_registers` updates a journal's registers.
    #[must_use]
    pub fn union(&self, other: &LabelSet) -> LabelSet {
        let mut out = self.clone();
        for label in &other.labels {
            if self.value_of(&label.name).is_none() {
                out.insert(label.clone());
            }
        }
        out
    }

    /// The labels of `self` whose name does not appear in `other` with exactly the same
    /// values. This is how `subtract_registers` updates a journal's registers.
    #[must_use]
    pub fn subtract(&self, other: &LabelSet) -> LabelSet {
        let mut out = LabelSet::default();
        for label in &self.labels {
            let mine = self.values_of(&label.name);
            let theirs = other.values_of(&label.name);
            if !mine.eq(theirs) {
                out.labels.push(label.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_sort_and_deduplicate() {
        let set = LabelSet::from_pairs([("b", "2"), ("aa", "x"), ("b", "1"), ("aa", "x")]);
        let pairs: Vec<_> = set
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(pairs, [("aa", "x"), ("b", "1"), ("b", "2")]);
        assert_eq!(set.values_of("b").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(set.value_of("zz"), None);
    }

    #[test]
    fn validation_names_the_label() {
        let set = LabelSet {
            labels: vec![Label::new("app", "clicks"), Label::new("xx", "bad value")],
        };
        let err = set.validate().expect_err("space in value");
        assert_eq!(err.field(), "labels[1].value");
        assert!(err.to_string().contains("invalid character ' '"), "{err}");

        let unsorted = LabelSet {
            labels: vec![Label::new("zone", "a"), Label::new("app", "b")],
        };
        let err = unsorted.validate().expect_err("unsorted");
        assert!(err.to_string().contains("out of order"), "{err}");

        let mixed = LabelSet {
            labels: vec![Label::new("app", ""), Label::new("app", "b")],
        };
        assert!(
            mixed
                .validate()
                .expect_err("mixed")
                .to_string()
                .contains("both an empty")
        );

        let short = LabelSet {
            labels: vec![Label::new("a", "b")],
        };
        assert_eq!(
            short.validate().expect_err("short").field(),
            "labels[0].name"
        );
    }

    #[test]
    fn union_and_subtract_follow_register_rules() {
        let regs = LabelSet::from_pairs([("owner", "a"), ("epoch", "1")]);
        let union = regs.union(&LabelSet::from_pairs([("owner", "b"), ("extra", "x")]));
        assert_eq!(union.value_of("owner"), Some("a"));
        assert_eq!(union.value_of("extra"), Some("x"));

        let left = union.subtract(&LabelSet::from_pairs([("owner", "a"), ("epoch", "2")]));
        assert_eq!(left.value_of("owner"), None);
        assert_eq!(left.value_of("epoch"), Some("1"));
        assert_eq!(left.value_of("extra"), Some("x"));
    }

    #[test]
    fn set_value_replaces() {
        let mut set = LabelSet::from_pairs([("aa", "1"), ("aa", "2")]);
        set.set_value("aa", "3");
        assert_eq!(set.values_of("aa").collect::<Vec<_>>(), ["3"]);
    }
}
