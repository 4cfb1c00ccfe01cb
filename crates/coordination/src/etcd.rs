//! [`EtcdKeySpace`]: the keyspace over etcd v3, for a cluster of brokers.
//!
//! A thin mapping: loads page through the prefix at one revision, watches map etcd's
//! compaction cancel to [`Error::Compacted`], leases are etcd leases (whole seconds; etcd
//! raises TTLs below its minimum, about two seconds with default settings).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as etcd;
use futures::StreamExt;

use crate::keyspace::{
    Compare, Event, KeySpace, KeyValue, LeaseId, Op, Snapshot, Txn, TxnResponse, WatchStream,
};
use crate::{Error, Result};

/// Keys per page of a load: keeps each response well under gRPC's 4 MiB message limit.
const LOAD_PAGE: i64 = 1000;

/// A [`KeySpace`] over an etcd cluster. Cheap to clone (the client multiplexes one channel).
#[derive(Clone)]
pub struct EtcdKeySpace {
    client: etcd::Client,
    endpoints: Vec<String>,
}

impl fmt::Debug for EtcdKeySpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdKeySpace")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdKeySpace {
    /// Connects to etcd at any of `endpoints` (client URLs such as `http://127.0.0.1:2379`).
    ///
    /// Requests require a leader, so a member cut off from its cluster fails requests and
    /// watches (retryably) instead of serving stale state. The connection is made lazily:
    /// an unreachable etcd shows as retryable errors of the first requests, not here.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Self> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_owned()).collect();
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        let client = etcd::Client::connect(&endpoints, Some(options))
            .await
            .map_err(from_etcd)?;
        Ok(Self { client, endpoints })
    }

    /// Wraps a client connected by the caller (for example, with TLS or credentials).
    pub fn from_client(client: etcd::Client) -> Self {
        Self {
            client,
            endpoints: Vec::new(),
        }
    }

    /// The underlying client, for what the keyspace does not cover (status, compaction).
    pub fn client(&self) -> &etcd::Client {
        &self.client
    }
}

/// Classifies a client error: transport failures, timeouts and "no leader" may pass.
pub(crate) fn from_etcd(source: etcd::Error) -> Error {
    let retryable = match &source {
        etcd::Error::GRpcStatus(status) => {
            use tonic::Code;
            matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::Cancelled
            ) || status.message().contains("no leader")
                || status.message().contains("leader changed")
        }
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::WatchError(_) | etcd::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    Error::Etcd { retryable, source }
}

fn is_lease_not_found(err: &etcd::Error) -> bool {
    match err {
        etcd::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

fn is_compacted(err: &etcd::Error) -> bool {
    matches!(err, etcd::Error::GRpcStatus(status)
        if status.message().contains("required revision has been compacted"))
}

/// The first key after every key that starts with `prefix`, as etcd's `WithPrefix` computes
/// it; `\0` (all keys) for an empty or all-`0xff` prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Converts an etcd key-value; `None` (with a warning) for a key that is not UTF-8, which
/// cannot be one of Folio's.
fn key_value(kv: &etcd::KeyValue) -> Option<KeyValue> {
    let Ok(key) = kv.key_str() else {
        tracing::warn!(key = ?kv.key(), "ignoring a key that is not UTF-8");
        return None;
    };
    Some(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

fn event(event: &etcd::Event) -> Option<Event> {
    let kv = event.kv()?;
    match event.event_type() {
        etcd::EventType::Put => key_value(kv).map(Event::Put),
        etcd::EventType::Delete => {
            let Ok(key) = kv.key_str() else {
                tracing::warn!(key = ?kv.key(), "ignoring a key that is not UTF-8");
                return None;
            };
            Some(Event::Delete {
                key: key.to_owned(),
                mod_revision: kv.mod_revision(),
            })
        }
    }
}

fn compare(compare: Compare) -> etcd::Compare {
    use etcd::CompareOp::Equal;
    match compare {
        Compare::ModRevision(key, rev) => etcd::Compare::mod_revision(key, Equal, rev),
        Compare::CreateRevision(key, rev) => etcd::Compare::create_revision(key, Equal, rev),
        Compare::Value(key, value) => etcd::Compare::value(key, Equal, value.to_vec()),
    }
}

fn op(op: Op) -> etcd::TxnOp {
    match op {
        Op::Put { key, value, lease } => etcd::TxnOp::put(
            key,
            value.to_vec(),
            lease.map(|lease| etcd::PutOptions::new().with_lease(lease.0)),
        ),
        Op::Delete { key } => etcd::TxnOp::delete(key, None),
        Op::DeletePrefix { prefix } => {
            etcd::TxnOp::delete(prefix, Some(etcd::DeleteOptions::new().with_prefix()))
        }
    }
}

/// The lease a txn puts with, for naming it in a "lease not found" error.
fn first_lease(txn: &Txn) -> LeaseId {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            _ => None,
        })
        .unwrap_or(LeaseId(0))
}

#[async_trait]
impl KeySpace for EtcdKeySpace {
    async fn load(&self, prefix: &str) -> Result<Snapshot> {
        let mut kv = self.client.kv_client();
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut snapshot = Snapshot::default();
        loop {
            let mut options = etcd::GetOptions::new()
                .with_range(end.clone())
                .with_limit(LOAD_PAGE);
            // Later pages read at the first page's revision, so the whole load is consistent.
            if snapshot.revision > 0 {
                options = options.with_revision(snapshot.revision);
            }
            let resp = kv.get(from.clone(), Some(options)).await.map_err(|err| {
                if is_compacted(&err) {
                    Error::Compacted {
                        requested: snapshot.revision,
                        compacted: snapshot.revision,
                    }
                } else {
                    from_etcd(err)
                }
            })?;
            if snapshot.revision == 0 {
                snapshot.revision = resp.header().map_or(0, |h| h.revision());
            }
            snapshot.kvs.extend(resp.kvs().iter().filter_map(key_value));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(snapshot),
            }
        }
    }

    fn watch(&self, prefix: &str, after_revision: i64) -> WatchStream {
        let state = WatchState::Start {
            client: self.client.watch_client(),
            prefix: prefix.to_owned(),
            after_revision,
        };
        futures::stream::unfold(state, WatchState::next).boxed()
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let lease = first_lease(&txn);
        let request = etcd::Txn::new()
            .when(txn.compares.into_iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.success.into_iter().map(op).collect::<Vec<_>>())
            .or_else(txn.failure.into_iter().map(op).collect::<Vec<_>>());
        let resp = self
            .client
            .kv_client()
            .txn(request)
            .await
            .map_err(|err| match &err {
                _ if is_lease_not_found(&err) => Error::LeaseNotFound(lease),
                etcd::Error::GRpcStatus(status) if status.message().contains("duplicate key") => {
                    Error::InvalidTxn(status.message().to_owned())
                }
                _ => from_etcd(err),
            })?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument("lease TTL must be positive".into()));
        }
        // etcd counts whole seconds; round up so a lease never lives shorter than asked.
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let resp = self
            .client
            .lease_client()
            .grant(seconds, None)
            .await
            .map_err(from_etcd)?;
        if !resp.error().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "etcd refused a lease of {seconds}s: {}",
                resp.error()
            )));
        }
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive_once(&self, lease: LeaseId) -> Result<()> {
        // The client's keep_alive sends one request and waits for its answer; it fails when
        // the answer has no TTL left (the lease is gone). Dropping the keeper ends the stream.
        match self.client.lease_client().keep_alive(lease.0).await {
            Ok(_) => Ok(()),
            Err(err) if is_lease_not_found(&err) => Err(Error::LeaseNotFound(lease)),
            Err(err) => Err(from_etcd(err)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.client.lease_client().revoke(lease.0).await {
            Ok(_) => Ok(()),
            Err(err) if is_lease_not_found(&err) => Err(Error::LeaseNotFound(lease)),
            Err(err) => Err(from_etcd(err)),
        }
    }
}

/// The state machine of an etcd watch stream (see [`KeySpace::watch`]).
enum WatchState {
    Start {
        client: etcd::WatchClient,
        prefix: String,
        after_revision: i64,
    },
    Running {
        stream: etcd::WatchStream,
        pending: VecDeque<Vec<Event>>,
        after_revision: i64,
    },
    Done,
}

impl WatchState {
    async fn next(self) -> Option<(Result<Vec<Event>>, WatchState)> {
        let (mut stream, mut pending, mut after_revision) = match self {
            WatchState::Done => return None,
            WatchState::Start {
                mut client,
                prefix,
                after_revision,
            } => {
                let options = etcd::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(after_revision + 1);
                match client.watch(prefix, Some(options)).await {
                    Ok(stream) => (stream, VecDeque::new(), after_revision),
                    Err(err) => return Some((Err(from_etcd(err)), WatchState::Done)),
                }
            }
            WatchState::Running {
                stream,
                pending,
                after_revision,
            } => (stream, pending, after_revision),
        };
        loop {
            if let Some(batch) = pending.pop_front() {
                let state = WatchState::Running {
                    stream,
                    pending,
                    after_revision,
                };
                return Some((Ok(batch), state));
            }
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    let err = Error::WatchEnded("etcd closed the watch stream".into());
                    return Some((Err(err), WatchState::Done));
                }
                Err(err) => return Some((Err(from_etcd(err)), WatchState::Done)),
            };
            if resp.compact_revision() > 0 {
                let err = Error::Compacted {
                    requested: after_revision,
                    compacted: resp.compact_revision(),
                };
                return Some((Err(err), WatchState::Done));
            }
            if resp.canceled() {
                let reason = format!("cancelled by etcd: {}", resp.cancel_reason());
                return Some((Err(Error::WatchEnded(reason)), WatchState::Done));
            }
            // etcd never splits one revision's events across responses (without the
            // `fragment` option, which is not set), so grouping per response is complete.
            for event in resp.events().iter().filter_map(event) {
                let revision = event.revision();
                match pending.back_mut() {
                    Some(batch) if batch.last().is_some_and(|e| e.revision() == revision) => {
                        batch.push(event);
                    }
                    _ => pending.push_back(vec![event]),
                }
                after_revision = revision;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_table() {
        assert_eq!(prefix_end(b"/folio/"), b"/folio0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
