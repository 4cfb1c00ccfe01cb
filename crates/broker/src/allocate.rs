//! Assignment of journals to members.
//!
//! This broker is the only member a journal can have until the multi-broker allocator
//! lands: it assigns every journal to itself at slot 0 (primary), and removes the
//! assignments of deleted journals, through the same `assign/` keys and the same
//! revision-guarded transactions a multi-broker allocator writes.

use folio_coordination::keyspace::{Compare, LeaseId, Op, Txn};
use prost::Message;

use crate::broker::Broker;

/// Writes the assignment changes this broker's view calls for, in one transaction
/// guarded by the mod revisions it read.
pub(crate) async fn assign_to_self(
    broker: &Broker,
    lease: LeaseId,
) -> Result<(), folio_coordination::Error> {
    let route = broker.route().encode_to_vec();
    let (specs, assignments) = broker
        .view
        .read(|s| (broker.layout.specs(s), broker.layout.assignments(s)));
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    for entry in &specs.items {
        let mine = assignments
            .items
            .get(&entry.spec.name)
            .is_some_and(|list| list.iter().any(|a| a.member == broker.id && a.slot == 0));
        if !mine {
            let key = broker
                .layout
                .assignment_key(&entry.spec.name, &broker.id, 0);
            compares.push(Compare::ModRevision(key.clone(), 0));
            // The spec must still be the one we saw.
            compares.push(Compare::ModRevision(
                broker.layout.spec_key(&entry.spec.name),
                entry.mod_revision,
            ));
            ops.push(Op::put_leased(key, route.clone(), lease));
        }
    }
    for (journal, list) in &assignments.items {
        if specs.items.iter().any(|e| &e.spec.name == journal) {
            continue;
        }
        for assignment in list.iter().filter(|a| a.member == broker.id) {
            let key = broker
                .layout
                .assignment_key(journal, &assignment.member, assignment.slot);
            compares.push(Compare::ModRevision(broker.layout.spec_key(journal), 0));
            ops.push(Op::delete(key));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let response = broker
        .keyspace
        .txn(Txn::new().when(compares).and_then(ops))
        .await?;
    if response.succeeded {
        broker.view.wait_for_revision(response.revision).await?;
    }
    Ok(())
}
