//! Assignment of journals to members, through `folio-coordination`'s allocator.
//!
//! This broker is the only member a journal can have until the multi-broker allocator
//! lands: [`folio_coordination::assign_all_to`] assigns every journal to it at slot 0
//! (primary) and removes the assignments of deleted journals, written through the same
//! `assign/` keys and revision-guarded transactions a multi-broker allocator uses.

use folio_coordination::LeaseId;
use folio_coordination::allocator::write_changes;

use crate::broker::Broker;

/// Writes the assignment changes this broker's view calls for.
pub(crate) async fn assign_to_self(
    broker: &Broker,
    lease: LeaseId,
) -> Result<(), folio_coordination::Error> {
    let (specs, assignments) = broker
        .view
        .read(|s| (broker.layout.specs(s), broker.layout.assignments(s)));
    let changes = folio_coordination::assign_all_to(
        &broker.id,
        &broker.endpoint,
        &specs.items,
        &assignments.items,
    );
    if changes.is_empty() {
        return Ok(());
    }
    let outcome = write_changes(&*broker.keyspace, &broker.layout, lease, &changes).await?;
    // Serve what was just assigned without waiting for the next watch event; a failed
    // guard means the view was stale, and the next revision decides again.
    broker.view.wait_for_revision(outcome.revision).await?;
    Ok(())
}
