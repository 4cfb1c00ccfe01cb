//! Pins the wire contract: every fact of Gazette's broker and consumer protocols (the
//! fixtures `fixtures/gazette-protocol-facts.tsv` and `fixtures/gazette-consumer-facts.tsv`:
//! each RPC, message field and enum value at the Gazette version Folio targets) must hold
//! in Folio's generated descriptors, and every message reachable from the `Journal` and
//! `Shard` services must carry no field below 1000 that Gazette does not have.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

const BROKER_FACTS: &str = include_str!("fixtures/gazette-protocol-facts.tsv");
const CONSUMER_FACTS: &str = include_str!("fixtures/gazette-consumer-facts.tsv");

/// Every message and enum of the descriptor set by full name (`.protocol.Route`).
#[derive(Default)]
struct Index<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
}

impl<'a> Index<'a> {
    fn add_message(&mut self, scope: &str, message: &'a DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for e in &message.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e);
        }
        self.messages.insert(name, message);
    }
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Message => "message",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Enum => "enum",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    }
}

fn label_name(l: Label) -> &'static str {
    match l {
        Label::Optional => "optional",
        Label::Required => "required",
        Label::Repeated => "repeated",
    }
}

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(folio_protocol::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// Every message and enum of every Folio file in the set.
fn index(set: &FileDescriptorSet) -> Index<'_> {
    let mut index = Index::default();
    for file in &set.file {
        let scope = format!(".{}", file.package());
        for message in &file.message_type {
            index.add_message(&scope, message);
        }
        for e in &file.enum_type {
            index.enums.insert(format!("{scope}.{}", e.name()), e);
        }
    }
    index
}

fn file<'a>(set: &'a FileDescriptorSet, package: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.package() == package)
        .unwrap_or_else(|| panic!("the {package} file is in the descriptor set"))
}

#[test]
fn every_gazette_broker_fact_holds() {
    let checked = check_facts("protocol", BROKER_FACTS);
    assert!(
        checked > 150,
        "the fixture has all the facts ({checked} rows read)"
    );
}

#[test]
fn every_gazette_consumer_fact_holds() {
    let checked = check_facts("consumer", CONSUMER_FACTS);
    assert!(
        checked > 100,
        "the fixture has all the facts ({checked} rows read)"
    );
}

/// Checks every row of `facts` against the descriptors; RPC rows name services of the
/// `package` file. Returns how many rows were checked.
fn check_facts(package: &str, facts: &str) -> usize {
    let set = descriptors();
    let file = file(&set, package);
    let index = index(&set);

    let mut checked = 0;
    let mut failures = Vec::new();
    for line in facts
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let [kind, name, member, number, ty, label, type_ref] = cols[..] else {
            panic!("fixture line has 7 columns: {line:?}");
        };
        checked += 1;
        match kind {
            "rpc" => {
                let service = file
                    .service
                    .iter()
                    .find(|s| s.name() == name)
                    .unwrap_or_else(|| panic!("service {name} exists"));
                let Some(method) = service.method.iter().find(|m| m.name() == member) else {
                    failures.push(format!("rpc {name}.{member} is missing"));
                    continue;
                };
                let stream = |s: bool| if s { "stream " } else { "" };
                let input = format!(
                    "{}{}",
                    stream(method.client_streaming()),
                    method.input_type()
                );
                let output = format!(
                    "{}{}",
                    stream(method.server_streaming()),
                    method.output_type()
                );
                if input != ty || output != type_ref {
                    failures.push(format!(
                        "rpc {member}: ours {input} -> {output}, Gazette's {ty} -> {type_ref}"
                    ));
                }
            }
            "field" => {
                let Some(message) = index.messages.get(name) else {
                    failures.push(format!("message {name} is missing"));
                    continue;
                };
                let Some(field) = message.field.iter().find(|f| f.name() == member) else {
                    failures.push(format!("field {name}.{member} is missing"));
                    continue;
                };
                let ours = (
                    field.number().to_string(),
                    type_name(field.r#type()),
                    label_name(field.label()),
                    field.type_name(),
                );
                if ours != (number.to_owned(), ty, label, type_ref) {
                    failures.push(format!(
                        "field {name}.{member}: ours {ours:?}, Gazette's ({number}, {ty}, {label}, {type_ref})"
                    ));
                }
                if field.proto3_optional() {
                    failures.push(format!(
                        "field {name}.{member} must not be proto3 `optional`"
                    ));
                }
            }
            "enum" => {
                let Some(e) = index.enums.get(name) else {
                    failures.push(format!("enum {name} is missing"));
                    continue;
                };
                match e.value.iter().find(|v| v.name() == member) {
                    Some(v) if v.number().to_string() == number => {}
                    Some(v) => failures.push(format!(
                        "enum {name}.{member}: ours {}, Gazette's {number}",
                        v.number()
                    )),
                    None => failures.push(format!("enum value {name}.{member} is missing")),
                }
            }
            other => panic!("unknown fact kind {other:?} in {line:?}"),
        }
    }
    assert!(
        failures.is_empty(),
        "wire contract broken:\n{}",
        failures.join("\n")
    );
    checked
}

#[test]
fn broker_messages_add_nothing_below_1000() {
    check_additions("protocol", "Journal", &[], BROKER_FACTS);
}

#[test]
fn consumer_messages_add_nothing_below_1000() {
    // Checkpoints and consumer specs are stored, not sent by the service.
    check_additions(
        "consumer",
        "Shard",
        &[".consumer.Checkpoint", ".consumer.ConsumerSpec"],
        CONSUMER_FACTS,
    );
}

/// Walks every message reachable from `service` of `package` (and from `roots`) within
/// the packages that `facts` describes: each must be in the facts, and each field below
/// 1000 must be Gazette's. Every message of the facts must be reached.
fn check_additions(package: &str, service: &str, roots: &[&str], facts: &str) {
    let set = descriptors();
    let file = file(&set, package);
    let index = index(&set);
    let facts: BTreeSet<(String, String)> = facts
        .lines()
        .filter(|l| l.starts_with("field\t"))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[1].to_owned(), cols[2].to_owned())
        })
        .collect();
    let fact_messages: BTreeSet<&String> = facts.iter().map(|(m, _)| m).collect();
    let in_scope = |name: &str| fact_messages.iter().any(|m| same_package(m, name));

    let service = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("service {service}"));
    let mut todo: Vec<String> = service
        .method
        .iter()
        .flat_map(|m| [m.input_type().to_owned(), m.output_type().to_owned()])
        .chain(roots.iter().map(|r| (*r).to_owned()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    while let Some(name) = todo.pop() {
        if !in_scope(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let message = index
            .messages
            .get(&name)
            .expect("reachable message is declared");
        if !fact_messages.contains(&name) {
            problems.push(format!(
                "{name} is reachable from {} but not in Gazette's facts",
                service.name()
            ));
        }
        for field in &message.field {
            if field.number() < 1000 && !facts.contains(&(name.clone(), field.name().to_owned())) {
                problems.push(format!(
                    "{name}.{} (#{}) is not Gazette's; Folio additions use numbers from 1000",
                    field.name(),
                    field.number()
                ));
            }
            if field.r#type() == Type::Message {
                todo.push(field.type_name().to_owned());
            }
        }
    }
    // Every message named in the facts is reachable, so the walk covered the whole service.
    for m in fact_messages {
        if !seen.contains(m) {
            problems.push(format!(
                "{m} is in Gazette's facts but not reachable from {}",
                service.name()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether two full names (`.consumer.ShardSpec`) are in the same package.
fn same_package(a: &str, b: &str) -> bool {
    let package = |n: &str| n.split('.').nth(1).map(str::to_owned);
    package(a) == package(b)
}
