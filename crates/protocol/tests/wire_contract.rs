//! Pins the wire contract: every fact of Gazette's broker protocol (the fixture
//! `fixtures/gazette-protocol-facts.tsv`: each RPC, message field and enum value at the
//! Gazette version Folio targets) must hold in Folio's generated descriptors, and every
//! message reachable from the `Journal` service must carry no field below 1000 that
//! Gazette does not have.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

const FACTS: &str = include_str!("fixtures/gazette-protocol-facts.tsv");

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

#[test]
fn every_gazette_fact_holds() {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "protocol")
        .expect("the protocol file is in the descriptor set");
    let mut index = Index::default();
    for message in &file.message_type {
        index.add_message(".protocol", message);
    }
    for e in &file.enum_type {
        index.enums.insert(format!(".protocol.{}", e.name()), e);
    }

    let mut checked = 0;
    let mut failures = Vec::new();
    for line in FACTS
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
        checked > 150,
        "the fixture has all the facts ({checked} rows read)"
    );
    assert!(
        failures.is_empty(),
        "wire contract broken:\n{}",
        failures.join("\n")
    );
}

#[test]
fn reachable_messages_add_nothing_below_1000() {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "protocol")
        .expect("protocol file");
    let mut index = Index::default();
    for message in &file.message_type {
        index.add_message(".protocol", message);
    }
    let facts: BTreeSet<(String, String)> = FACTS
        .lines()
        .filter(|l| l.starts_with("field\t"))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[1].to_owned(), cols[2].to_owned())
        })
        .collect();
    let fact_messages: BTreeSet<&String> = facts.iter().map(|(m, _)| m).collect();

    let service = file
        .service
        .iter()
        .find(|s| s.name() == "Journal")
        .expect("Journal service");
    let mut todo: Vec<String> = service
        .method
        .iter()
        .flat_map(|m| [m.input_type().to_owned(), m.output_type().to_owned()])
        .collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    while let Some(name) = todo.pop() {
        if !name.starts_with(".protocol.") || !seen.insert(name.clone()) {
            continue;
        }
        let message = index
            .messages
            .get(&name)
            .expect("reachable message is declared");
        if !fact_messages.contains(&name) {
            problems.push(format!(
                "{name} is reachable from Journal but not in Gazette's facts"
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
                "{m} is in Gazette's facts but not reachable from Journal"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
