//! Integration tests of folio-coordination: the keyspace conformance suite, run against
//! [`MemoryKeySpace`] and a real etcd, and the view, membership and allocator over both.
//!
//! The etcd tests need `FOLIO_TEST_ETCD` (see `folio_tests`); without it they fail, they
//! never skip. Each test works under its own unique prefix, so runs can share a server.

mod conformance;
mod fixtures;
mod scenarios;

/// Generates one `#[tokio::test]` per behaviour, over the keyspace `fixture` builds.
macro_rules! keyspace_tests {
    ($fixture:path; $suite:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                crate::$suite::$name(&fixture).await;
            }
        )*
    };
}

mod memory {
    keyspace_tests!(crate::fixtures::memory; conformance:
        load_is_sorted_with_revisions,
        txn_create_only,
        txn_mod_revision_guard,
        txn_create_revision_compare,
        txn_value_compare,
        txn_is_atomic,
        delete_prefix,
        watch_delivers_in_order_after_revision,
        watch_after_compacted_revision_errors,
        leases_expire_and_delete_keys,
        revoke_deletes_keys,
        keep_alive_keeps_keys,
    );
    keyspace_tests!(crate::fixtures::memory; scenarios:
        view_follows_changes,
        view_waits_for_revision_outside_its_prefix,
        membership_is_exclusive_and_revocable,
        membership_reports_a_lost_lease,
        allocator_runs_on_the_leader_and_binds_assigned_leases,
    );
}

mod etcd {
    keyspace_tests!(crate::fixtures::etcd; conformance:
        load_is_sorted_with_revisions,
        txn_create_only,
        txn_mod_revision_guard,
        txn_create_revision_compare,
        txn_value_compare,
        txn_is_atomic,
        delete_prefix,
        watch_delivers_in_order_after_revision,
        watch_after_compacted_revision_errors,
        leases_expire_and_delete_keys,
        revoke_deletes_keys,
        keep_alive_keeps_keys,
    );
    keyspace_tests!(crate::fixtures::etcd; scenarios:
        view_follows_changes,
        view_waits_for_revision_outside_its_prefix,
        membership_is_exclusive_and_revocable,
        membership_reports_a_lost_lease,
        allocator_runs_on_the_leader_and_binds_assigned_leases,
    );
}
