//! The key layout under a prefix (default [`DEFAULT_PREFIX`]), as Gazette lays it out:
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `{prefix}/items/{journal}` | `JournalSpec` | until deleted by Apply |
//! | `{prefix}/members/{zone}#{suffix}` | `BrokerSpec` | the member's lease |
//! | `{prefix}/assign/{journal}#{zone}#{suffix}#{slot}` | `Route` | the member's lease |
//!
//! Slot 0 of an assignment is the primary. `#` separates the parts: journal names, zones
//! and suffixes never contain it, and it sorts before every character they may contain, so
//! `{prefix}/assign/{journal}#` is exactly the assignments of one journal.
//!
//! [`Layout`] builds and parses keys (parsing fails with an error naming the key) and decodes
//! a [`ViewState`] into specs, members and assignments. A value that does not decode, or
//! contradicts its key, is reported in [`Decoded::invalid`] and left out, so one bad key
//! cannot hide the rest.

use std::collections::BTreeMap;

use folio_protocol::{BrokerSpec, JournalSpec, Route, process_spec::Id};
use prost::Message;

use crate::keyspace::{KeyValue, LeaseId};
use crate::view::ViewState;
use crate::{Error, Result};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/folio";

/// The key layout under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// The parts of an assignment key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentKey {
    /// The journal.
    pub journal: String,
    /// The assigned member.
    pub member: Id,
    /// The slot: 0 is the primary, 1.. the replicas.
    pub slot: u32,
}

/// A decoded journal spec with the revisions of its key.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecEntry {
    /// The spec; its `name` matches its key.
    pub spec: JournalSpec,
    /// Revision at which the spec was created.
    pub create_revision: i64,
    /// Revision of the spec's last change (what Apply's `expect_mod_revision` compares).
    pub mod_revision: i64,
}

/// A decoded live member.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The member's id, from its key.
    pub id: Id,
    /// The member's spec; its id matches the key.
    pub spec: BrokerSpec,
    /// Revision at which the member announced itself (the oldest member runs the allocator).
    pub create_revision: i64,
    /// Revision of the member key's last change.
    pub mod_revision: i64,
    /// The member's lease.
    pub lease: Option<LeaseId>,
}

/// A decoded assignment of one journal to one member.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The assigned member.
    pub member: Id,
    /// The slot: 0 is the primary.
    pub slot: u32,
    /// The route as the member last saw it.
    pub route: Route,
    /// Revision at which the assignment was created.
    pub create_revision: i64,
    /// Revision of the assignment's last change (guards allocator txns).
    pub mod_revision: i64,
    /// The lease the assignment is bound to: the assigned member's, so it dies with it.
    pub lease: Option<LeaseId>,
}

/// Decoded items, and the keys under the layout that did not decode.
#[derive(Debug)]
pub struct Decoded<T> {
    /// What decoded.
    pub items: T,
    /// One error per key that did not ([`Error::InvalidKey`] or [`Error::InvalidValue`]).
    pub invalid: Vec<Error>,
}

const ITEMS: &str = "/items/";
const MEMBERS: &str = "/members/";
const ASSIGN: &str = "/assign/";
const SEP: char = '#';

impl Default for Layout {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Layout {
    /// The layout under `prefix`, which must start with `/`, not end with `/`, and not
    /// contain `#`, so that every key it builds parses back.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let reason = if !prefix.starts_with('/') {
            Some("a prefix must start with '/'")
        } else if prefix.ends_with('/') {
            Some("a prefix must not end with '/'")
        } else if prefix.contains(SEP) {
            Some("a prefix must not contain '#'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidKey {
                key: prefix,
                reason: reason.to_owned(),
            }),
            None => Ok(Self { prefix }),
        }
    }

    /// The prefix (no trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix a broker's view follows: everything of this layout.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The prefix of all spec keys.
    pub fn items_prefix(&self) -> String {
        format!("{}{ITEMS}", self.prefix)
    }

    /// The prefix of all member keys.
    pub fn members_prefix(&self) -> String {
        format!("{}{MEMBERS}", self.prefix)
    }

    /// The prefix of all assignment keys.
    pub fn assign_prefix(&self) -> String {
        format!("{}{ASSIGN}", self.prefix)
    }

    /// The prefix of the assignment keys of one journal.
    pub fn journal_assign_prefix(&self, journal: &str) -> String {
        format!("{}{ASSIGN}{journal}{SEP}", self.prefix)
    }

    /// The key of a journal's spec. `journal` must be a valid spec name
    /// (`folio_protocol::journal_name::validate_spec_name`).
    pub fn spec_key(&self, journal: &str) -> String {
        format!("{}{ITEMS}{journal}", self.prefix)
    }

    /// The key of a member. The id must pass [`validate_member_id`].
    pub fn member_key(&self, id: &Id) -> String {
        format!("{}{MEMBERS}{}{SEP}{}", self.prefix, id.zone, id.suffix)
    }

    /// The key of an assignment.
    pub fn assignment_key(&self, journal: &str, member: &Id, slot: u32) -> String {
        format!(
            "{}{ASSIGN}{journal}{SEP}{}{SEP}{}{SEP}{slot}",
            self.prefix, member.zone, member.suffix
        )
    }

    /// The key of an assignment, from its parts.
    pub fn assignment_key_of(&self, key: &AssignmentKey) -> String {
        self.assignment_key(&key.journal, &key.member, key.slot)
    }

    /// The journal of a spec key.
    pub fn parse_spec_key(&self, key: &str) -> Result<String> {
        let journal = self.strip(key, ITEMS)?;
        folio_protocol::journal_name::validate_spec_name(journal)
            .map_err(|err| invalid_key(key, err.to_string()))?;
        Ok(journal.to_owned())
    }

    /// The member id of a member key.
    pub fn parse_member_key(&self, key: &str) -> Result<Id> {
        let rest = self.strip(key, MEMBERS)?;
        let parts: Vec<&str> = rest.split(SEP).collect();
        let [zone, suffix] = parts[..] else {
            return Err(invalid_key(
                key,
                format!("expected {{zone}}#{{suffix}} after {MEMBERS:?}"),
            ));
        };
        let id = Id {
            zone: zone.to_owned(),
            suffix: suffix.to_owned(),
        };
        validate_member_id(&id).map_err(|reason| invalid_key(key, reason))?;
        Ok(id)
    }

    /// The parts of an assignment key.
    pub fn parse_assignment_key(&self, key: &str) -> Result<AssignmentKey> {
        let rest = self.strip(key, ASSIGN)?;
        let parts: Vec<&str> = rest.split(SEP).collect();
        let [journal, zone, suffix, slot] = parts[..] else {
            return Err(invalid_key(
                key,
                format!("expected {{journal}}#{{zone}}#{{suffix}}#{{slot}} after {ASSIGN:?}"),
            ));
        };
        folio_protocol::journal_name::validate_spec_name(journal)
            .map_err(|err| invalid_key(key, err.to_string()))?;
        let member = Id {
            zone: zone.to_owned(),
            suffix: suffix.to_owned(),
        };
        validate_member_id(&member).map_err(|reason| invalid_key(key, reason))?;
        // Only the canonical decimal form, so that every key has one parse and vice versa.
        let slot = slot
            .parse::<u32>()
            .ok()
            .filter(|n| n.to_string() == slot)
            .ok_or_else(|| invalid_key(key, format!("slot {slot:?} is not a decimal number")))?;
        Ok(AssignmentKey {
            journal: journal.to_owned(),
            member,
            slot,
        })
    }

    fn strip<'k>(&self, key: &'k str, section: &str) -> Result<&'k str> {
        key.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(section))
            .ok_or_else(|| {
                invalid_key(
                    key,
                    format!("expected it to start with {}{section}", self.prefix),
                )
            })
    }

    /// Decodes every spec of `state`, sorted by journal name.
    pub fn specs(&self, state: &ViewState) -> Decoded<Vec<SpecEntry>> {
        let mut decoded = Decoded::new(Vec::new());
        for kv in state.range(&self.items_prefix()) {
            match self.decode_spec(kv) {
                Ok(entry) => decoded.items.push(entry),
                Err(err) => decoded.invalid.push(err),
            }
        }
        decoded
    }

    /// Decodes one spec key-value.
    pub fn decode_spec(&self, kv: &KeyValue) -> Result<SpecEntry> {
        let journal = self.parse_spec_key(&kv.key)?;
        let spec = JournalSpec::decode(kv.value.as_ref())
            .map_err(|err| invalid_value(&kv.key, format!("not a JournalSpec: {err}")))?;
        if spec.name != journal {
            return Err(invalid_value(
                &kv.key,
                format!("the spec is named {:?}, not {journal:?}", spec.name),
            ));
        }
        Ok(SpecEntry {
            spec,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }

    /// Decodes every member of `state`, sorted by key (zone, then suffix).
    pub fn members(&self, state: &ViewState) -> Decoded<Vec<Member>> {
        let mut decoded = Decoded::new(Vec::new());
        for kv in state.range(&self.members_prefix()) {
            match self.decode_member(kv) {
                Ok(member) => decoded.items.push(member),
                Err(err) => decoded.invalid.push(err),
            }
        }
        decoded
    }

    /// Decodes one member key-value.
    pub fn decode_member(&self, kv: &KeyValue) -> Result<Member> {
        let id = self.parse_member_key(&kv.key)?;
        let spec = BrokerSpec::decode(kv.value.as_ref())
            .map_err(|err| invalid_value(&kv.key, format!("not a BrokerSpec: {err}")))?;
        let spec_id = spec.process_spec.as_ref().and_then(|p| p.id.as_ref());
        if spec_id != Some(&id) {
            return Err(invalid_value(
                &kv.key,
                format!("the BrokerSpec's id {spec_id:?} does not match the key"),
            ));
        }
        Ok(Member {
            id,
            spec,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        })
    }

    /// Decodes every assignment of `state`, by journal, each journal's sorted by slot then
    /// member key.
    pub fn assignments(&self, state: &ViewState) -> Decoded<BTreeMap<String, Vec<Assignment>>> {
        let mut decoded = Decoded::new(BTreeMap::<String, Vec<Assignment>>::new());
        for kv in state.range(&self.assign_prefix()) {
            match self.decode_assignment(kv) {
                Ok((journal, assignment)) => {
                    decoded.items.entry(journal).or_default().push(assignment);
                }
                Err(err) => decoded.invalid.push(err),
            }
        }
        for assignments in decoded.items.values_mut() {
            assignments.sort_by(|a, b| {
                (a.slot, &a.member.zone, &a.member.suffix).cmp(&(
                    b.slot,
                    &b.member.zone,
                    &b.member.suffix,
                ))
            });
        }
        decoded
    }

    /// Decodes one assignment key-value into its journal and assignment.
    pub fn decode_assignment(&self, kv: &KeyValue) -> Result<(String, Assignment)> {
        let key = self.parse_assignment_key(&kv.key)?;
        let route = Route::decode(kv.value.as_ref())
            .map_err(|err| invalid_value(&kv.key, format!("not a Route: {err}")))?;
        Ok((
            key.journal,
            Assignment {
                member: key.member,
                slot: key.slot,
                route,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                lease: kv.lease,
            },
        ))
    }
}

impl<T> Decoded<T> {
    fn new(items: T) -> Self {
        Self {
            items,
            invalid: Vec::new(),
        }
    }
}

/// Checks that a member id can be part of a key: zone and suffix non-empty, without `#`,
/// whitespace or control characters. Returns what is wrong.
pub fn validate_member_id(id: &Id) -> Result<(), String> {
    for (field, value) in [("zone", &id.zone), ("suffix", &id.suffix)] {
        if value.is_empty() {
            return Err(format!("member {field} is empty"));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| *c == SEP || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "member {field} {value:?} has invalid character {bad:?}"
            ));
        }
    }
    Ok(())
}

fn invalid_key(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn invalid_value(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidValue {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Snapshot;
    use bytes::Bytes;
    use folio_protocol::ProcessSpec;
    use proptest::prelude::*;

    fn id(zone: &str, suffix: &str) -> Id {
        Id {
            zone: zone.into(),
            suffix: suffix.into(),
        }
    }

    fn layout() -> Layout {
        Layout::default()
    }

    #[test]
    fn keys_round_trip() {
        let l = layout();
        assert_eq!(l.spec_key("acme/clicks"), "/folio/items/acme/clicks");
        assert_eq!(
            l.parse_spec_key("/folio/items/acme/clicks")
                .expect("test step"),
            "acme/clicks"
        );
        let m = id("us-east-1a", "broker-7");
        assert_eq!(l.member_key(&m), "/folio/members/us-east-1a#broker-7");
        assert_eq!(l.parse_member_key(&l.member_key(&m)).expect("test step"), m);
        let key = l.assignment_key("acme/clicks", &m, 2);
        assert_eq!(key, "/folio/assign/acme/clicks#us-east-1a#broker-7#2");
        assert_eq!(
            l.parse_assignment_key(&key).expect("test step"),
            AssignmentKey {
                journal: "acme/clicks".into(),
                member: m,
                slot: 2
            }
        );
        assert!(key.starts_with(&l.journal_assign_prefix("acme/clicks")));
        assert!(!key.starts_with(&l.journal_assign_prefix("acme/click")));
    }

    #[test]
    fn malformed_keys_name_the_key() {
        let l = layout();
        type Parse = fn(&Layout, &str) -> Option<Error>;
        let cases: &[(&str, Parse)] = &[
            ("/other/items/acme/clicks", |l, k| l.parse_spec_key(k).err()),
            ("/folio/items/", |l, k| l.parse_spec_key(k).err()),
            ("/folio/items/has#hash", |l, k| l.parse_spec_key(k).err()),
            ("/folio/items/a//b", |l, k| l.parse_spec_key(k).err()),
            ("/folio/members/zone", |l, k| l.parse_member_key(k).err()),
            ("/folio/members/#suffix", |l, k| l.parse_member_key(k).err()),
            ("/folio/members/z#s#x", |l, k| l.parse_member_key(k).err()),
            ("/folio/members/z#a b", |l, k| l.parse_member_key(k).err()),
            ("/folio/assign/acme/clicks#z#s", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/acme/clicks#z#s#x", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/acme/clicks#z#s#01", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/acme/clicks#z#s#+1", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/acme/clicks#z#s#-1", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/abc#z#s#0", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/assign/acme/clicks##s#0", |l, k| {
                l.parse_assignment_key(k).err()
            }),
            ("/folio/items/acme#z#s#0", |l, k| {
                l.parse_assignment_key(k).err()
            }),
        ];
        for (key, parse) in cases {
            let err = parse(&l, key).unwrap_or_else(|| panic!("{key} should not parse"));
            assert!(matches!(err, Error::InvalidKey { .. }), "{key}: {err}");
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for prefix in ["folio", "/folio/", "/fo#lio", ""] {
            assert!(Layout::new(prefix).is_err(), "{prefix:?}");
        }
        assert_eq!(Layout::new("/a/b").expect("test step").prefix(), "/a/b");
    }

    fn kv(key: String, value: Vec<u8>, rev: i64) -> KeyValue {
        KeyValue {
            key,
            value: Bytes::from(value),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    }

    #[test]
    fn decodes_a_view_and_reports_bad_values() {
        let l = layout();
        let spec = JournalSpec {
            name: "acme/clicks".into(),
            replication: 1,
            ..JournalSpec::default()
        };
        let wrong_name = JournalSpec {
            name: "acme/other".into(),
            ..JournalSpec::default()
        };
        let m = id("z", "b1");
        let broker = BrokerSpec {
            process_spec: Some(ProcessSpec {
                id: Some(m.clone()),
                endpoint: "http://b1".into(),
            }),
            journal_limit: 10,
            exiting: false,
        };
        let route = Route {
            members: vec![m.clone()],
            primary: 0,
            endpoints: vec!["http://b1".into()],
        };
        let state = ViewState::from(Snapshot {
            revision: 9,
            kvs: vec![
                kv(
                    l.assignment_key("acme/clicks", &m, 1),
                    route.encode_to_vec(),
                    6,
                ),
                kv(
                    l.assignment_key("acme/clicks", &m, 0),
                    route.encode_to_vec(),
                    5,
                ),
                kv("/folio/assign/bad".into(), vec![], 5),
                kv(l.spec_key("acme/clicks"), spec.encode_to_vec(), 2),
                kv(l.spec_key("acme/clocks"), wrong_name.encode_to_vec(), 3),
                kv(l.spec_key("acme/garbage"), vec![0xff, 0xff], 4),
                kv(l.member_key(&m), broker.encode_to_vec(), 7),
                kv(l.member_key(&id("z", "b2")), broker.encode_to_vec(), 8),
            ],
        });
        let specs = l.specs(&state);
        assert_eq!(specs.items.len(), 1);
        assert_eq!(specs.items[0].spec, spec);
        assert_eq!(specs.items[0].mod_revision, 2);
        assert_eq!(specs.invalid.len(), 2, "{:?}", specs.invalid);
        let members = l.members(&state);
        assert_eq!(members.items.len(), 1);
        assert_eq!(members.items[0].id, m);
        assert_eq!(
            members.invalid.len(),
            1,
            "id mismatch: {:?}",
            members.invalid
        );
        let assignments = l.assignments(&state);
        let clicks = &assignments.items["acme/clicks"];
        assert_eq!(clicks.iter().map(|a| a.slot).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(clicks[0].route, route);
        assert_eq!(assignments.invalid.len(), 1);
        assert!(
            assignments.invalid[0]
                .to_string()
                .contains("/folio/assign/bad")
        );
    }

    proptest! {
        #[test]
        fn assignment_keys_round_trip(
            journal in "[a-z]{2,8}(/[a-z0-9=_-]{1,8}){1,3}",
            zone in "[a-zA-Z0-9._-]{1,12}",
            suffix in "[a-zA-Z0-9._/+-]{1,12}",
            slot in any::<u32>(),
        ) {
            let l = layout();
            let member = Id { zone, suffix };
            let key = l.assignment_key(&journal, &member, slot);
            let parsed = l.parse_assignment_key(&key).expect("test step");
            prop_assert_eq!(&parsed, &AssignmentKey { journal: journal.clone(), member: member.clone(), slot });
            prop_assert_eq!(l.assignment_key_of(&parsed), key);
            prop_assert_eq!(l.parse_member_key(&l.member_key(&member)).expect("test step"), member);
            prop_assert_eq!(l.parse_spec_key(&l.spec_key(&journal)).expect("test step"), journal);
        }

        #[test]
        fn parsers_never_panic(key in "\\PC{0,40}") {
            let l = layout();
            let _ = l.parse_spec_key(&key);
            let _ = l.parse_member_key(&key);
            let _ = l.parse_assignment_key(&key);
        }
    }
}
