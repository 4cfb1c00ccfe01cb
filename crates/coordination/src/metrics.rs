//! The coordination crate's metrics: lease renewals and allocator runs. Recorded through
//! the `metrics` facade (nothing is kept until a process installs a recorder).

/// Lease renewal attempts, by `outcome`: `ok`, `failed` or `timeout`.
pub const LEASE_RENEWALS: &str = "folio_lease_renewals_total";
/// Allocator decisions by this member, by `outcome`: `converged` (nothing to change) or
/// `wrote` (assignments changed). Only the leader decides.
pub const ALLOCATOR_RUNS: &str = "folio_allocator_runs_total";
/// Assignment changes the allocator wrote (added, removed or reordered members).
pub const ALLOCATOR_CHANGES: &str = "folio_allocator_changes_total";

/// Registers this crate's metric descriptions with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        LEASE_RENEWALS,
        "Membership lease renewal attempts, by outcome (ok, failed, timeout)."
    );
    metrics::describe_counter!(
        ALLOCATOR_RUNS,
        "Allocator decisions by this member while it leads, by outcome (converged, wrote)."
    );
    metrics::describe_counter!(
        ALLOCATOR_CHANGES,
        "Journal assignment changes the allocator wrote."
    );
}
