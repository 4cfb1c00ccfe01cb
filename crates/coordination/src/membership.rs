//! Membership: a broker announces itself under a lease and keeps the lease alive.
//!
//! Leases are the cluster's only failure detector: when a broker stops renewing its lease,
//! its member key and every assignment it holds (all bound to the same lease) disappear, and
//! the allocator moves its journals. A broker that loses its lease must stop acting as a
//! member (stop serving its journals) and announce again; [`Membership::status`] tells it.

use std::sync::Arc;
use std::time::Duration;

use folio_protocol::BrokerSpec;
use folio_protocol::process_spec::Id;
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::keys::{Layout, validate_member_id};
use crate::keyspace::{Compare, KeySpace, LeaseId, Op, Txn};
use crate::{Error, Result};

/// Whether a member's lease is still held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// The lease was renewed within its TTL.
    Live,
    /// The keyspace says the lease is gone (expired or revoked): the member key and its
    /// assignments are deleted. Final: the keep-alive task has stopped.
    Lost {
        /// Why, for logs.
        reason: String,
    },
}

/// A live member: its key, its lease and the task keeping the lease alive.
///
/// Dropping it stops the keep-alive, and the lease then expires after its TTL; call
/// [`Membership::revoke`] on a clean shutdown to remove the member at once.
#[derive(Debug)]
pub struct Membership {
    keyspace: Arc<dyn KeySpace>,
    key: String,
    id: Id,
    spec: BrokerSpec,
    lease: LeaseId,
    create_revision: i64,
    status: watch::Receiver<MemberStatus>,
    valid_until: watch::Receiver<Instant>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Announces `spec` as a member: grants a lease of `ttl`, creates the member key under it,
/// and starts renewing the lease every `ttl / 3`.
///
/// Fails with [`Error::MemberExists`] if a member with the same id holds the key (the
/// lease granted here is revoked again), and with [`Error::InvalidArgument`] if the spec
/// has no usable id.
pub async fn announce(
    keyspace: Arc<dyn KeySpace>,
    layout: &Layout,
    spec: BrokerSpec,
    ttl: Duration,
) -> Result<Membership> {
    let id = member_id(&spec)?;
    if ttl < Duration::from_millis(3) {
        return Err(Error::InvalidArgument(format!(
            "member lease TTL {ttl:?} is too short to renew"
        )));
    }
    let key = layout.member_key(&id);
    let granted = Instant::now();
    let lease = keyspace.grant_lease(ttl).await?;
    let txn = Txn::new()
        .when([Compare::ModRevision(key.clone(), 0)])
        .and_then([Op::put_leased(key.clone(), spec.encode_to_vec(), lease)]);
    let created = keyspace.txn(txn).await;
    let resp = match created {
        Ok(resp) if resp.succeeded => resp,
        other => {
            // Best effort: the lease holds nothing, and it expires on its own anyway.
            if let Err(err) = keyspace.revoke_lease(lease).await {
                tracing::debug!(error = %err, %lease, "revoking an unused lease failed");
            }
            return Err(match other {
                Ok(_) => Error::MemberExists { key },
                Err(err) => err,
            });
        }
    };
    let (tx, status) = watch::channel(MemberStatus::Live);
    // The lease was granted before the key was created: count its TTL from then.
    let (valid_tx, valid_until) = watch::channel(granted + ttl - safety_margin(ttl));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        keep_alive(keyspace.clone(), lease, ttl, tx, valid_tx, cancel.clone())
            .instrument(tracing::info_span!("member_keep_alive", member = %key, %lease)),
    );
    tracing::info!(member = %key, %lease, revision = resp.revision, "announced");
    Ok(Membership {
        keyspace,
        key,
        id,
        spec,
        lease,
        create_revision: resp.revision,
        status,
        valid_until,
        cancel,
        task: Some(task),
    })
}

fn member_id(spec: &BrokerSpec) -> Result<Id> {
    let id = spec
        .process_spec
        .as_ref()
        .and_then(|p| p.id.clone())
        .ok_or_else(|| Error::InvalidArgument("the BrokerSpec has no process_spec.id".into()))?;
    validate_member_id(&id).map_err(Error::InvalidArgument)?;
    Ok(id)
}

impl Membership {
    /// The member key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The member id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The spec as last written.
    pub fn spec(&self) -> &BrokerSpec {
        &self.spec
    }

    /// The lease; put this member's assignments with it so they die with the member.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The revision that created the member key (the oldest member runs the allocator).
    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }

    /// The lease's status; changes once, to [`MemberStatus::Lost`], when the keyspace says
    /// the lease is gone. Past [`Membership::valid_until`] the lease may be gone already.
    pub fn status(&self) -> watch::Receiver<MemberStatus> {
        self.status.clone()
    }

    /// Until when the lease is known to hold (see `keep_alive`): past it, this member must
    /// not acknowledge anything on the strength of its assignments.
    pub fn valid_until(&self) -> watch::Receiver<Instant> {
        self.valid_until.clone()
    }

    /// Rewrites the member's spec (for example with `exiting: true` on shutdown), if this
    /// membership still holds the key. The id must not change. Fails with
    /// [`Error::LeaseNotFound`] if the key is gone (the lease was lost).
    pub async fn update(&mut self, spec: BrokerSpec) -> Result<i64> {
        let id = member_id(&spec)?;
        if id != self.id {
            return Err(Error::InvalidArgument(format!(
                "a member cannot change its id (from {:?} to {id:?})",
                self.id
            )));
        }
        let txn = Txn::new()
            .when([Compare::CreateRevision(
                self.key.clone(),
                self.create_revision,
            )])
            .and_then([Op::put_leased(
                self.key.clone(),
                spec.encode_to_vec(),
                self.lease,
            )]);
        let resp = self.keyspace.txn(txn).await?;
        if !resp.succeeded {
            return Err(Error::LeaseNotFound(self.lease));
        }
        self.spec = spec;
        Ok(resp.revision)
    }

    /// Stops the keep-alive and revokes the lease, deleting the member key and every key
    /// bound to the lease (its assignments) at once. A lease that is already gone is fine.
    pub async fn revoke(mut self) -> Result<()> {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "keep-alive task failed");
        }
        match self.keyspace.revoke_lease(self.lease).await {
            Ok(()) | Err(Error::LeaseNotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Renews `lease` every `ttl / 3` until cancelled, publishing in `valid` how long the
/// lease is known to hold: a renewal sent at `t` that succeeds keeps the lease until at
/// least `t + ttl` as the keyspace counts, so `valid` is `t + ttl` less a margin for clock
/// rate differences. Past `valid` without a newer renewal, the member must act as if its
/// keys were gone (another member may serve its journals): its owner stops acknowledging.
/// It keeps trying, though: when the keyspace itself was down (etcd keeps leases across its
/// own restarts), a later renewal succeeds and `valid` moves on. Reports
/// [`MemberStatus::Lost`] and stops only when the keyspace says the lease is gone.
async fn keep_alive(
    keyspace: Arc<dyn KeySpace>,
    lease: LeaseId,
    ttl: Duration,
    status: watch::Sender<MemberStatus>,
    valid: watch::Sender<Instant>,
    cancel: CancellationToken,
) {
    let interval = ttl / 3;
    let mut lapsed_warned = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let sent = Instant::now();
        let attempt = tokio::select! {
            () = cancel.cancelled() => return,
            attempt = tokio::time::timeout(interval, keyspace.keep_alive_once(lease)) => attempt,
        };
        let outcome = match &attempt {
            Ok(Ok(())) => "ok",
            Ok(Err(_)) => "failed",
            Err(_) => "timeout",
        };
        metrics::counter!(crate::metrics::LEASE_RENEWALS, "outcome" => outcome).increment(1);
        match attempt {
            Ok(Ok(())) => {
                if lapsed_warned {
                    tracing::info!("lease renewed again after the keyspace was unreachable");
                    lapsed_warned = false;
                }
                valid.send_replace(sent + ttl - safety_margin(ttl));
            }
            Ok(Err(Error::LeaseNotFound(_))) => {
                lost(&status, "the lease expired or was revoked".into());
                return;
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "renewing the lease failed"),
            Err(_) => tracing::warn!(?interval, "renewing the lease timed out"),
        }
        if !lapsed_warned && Instant::now() >= *valid.borrow() {
            tracing::error!(
                ?ttl,
                "no lease renewal succeeded within the TTL: acknowledging nothing until one does"
            );
            lapsed_warned = true;
        }
    }
}

/// The part of a TTL not counted on: clocks of this process and the keyspace may run at
/// slightly different rates (1%), plus 50 ms of scheduling slack.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 100 + Duration::from_millis(50)).min(ttl / 4)
}

fn lost(status: &watch::Sender<MemberStatus>, reason: String) {
    tracing::error!(%reason, "member lease lost");
    status.send_replace(MemberStatus::Lost { reason });
}
