//! A consumer process: joins its application's keyspace as a member, runs the allocator
//! over its shards (when it leads), and runs the shards assigned to it (as primary or
//! standby), restarting failed ones.
//!
//! ## Keys
//! Under the application's prefix (for example `/folio/consumers/stream-sum`), the layout
//! is the brokers' ([`Layout`]): `items/{shard}` holds a `ShardSpec`, `members/{zone}#{suffix}`
//! a `ConsumerSpec` under the process's lease, `assign/{shard}#{zone}#{suffix}#{slot}` the
//! route its member last saw. A `ConsumerSpec` has the same fields, numbers and wire types
//! as a `BrokerSpec` (`shard_limit` in place of `journal_limit`), so members decode and
//! are announced with the coordination crate unchanged; a shard is given to the allocator
//! as an item of replication `1 + hot_standbys`, and a disabled shard as a suspended one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use folio_coordination::allocator::write::{Fence, advertise_route, leader};
use folio_coordination::allocator::write_changes;
use folio_coordination::keys::Layout;
use folio_coordination::{
    Assignment, Decoded, KeySpace, KeySpaceView, Member, MemberStatus, SpecEntry, ViewOptions,
    ViewState, allocate, announce,
};
use folio_protocol::consumer::{ShardSpec, replica_status};
use folio_protocol::journal_spec::{Suspend, suspend};
use folio_protocol::process_spec::Id;
use folio_protocol::{BrokerSpec, JournalSpec, ProcessSpec};
use prost::Message;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::shard::{self, Role, ShardContext, ShardStatus};
use crate::{Error, Result};

/// Settings of a consumer process.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The process's member id (zone and suffix).
    pub id: Id,
    /// The endpoint at which it serves the `Shard` service, advertised in routes.
    pub endpoint: String,
    /// A broker endpoint for journals.
    pub broker: String,
    /// How the broker is reached: TLS for an `https://` endpoint, and the bearer token.
    pub broker_connect: folio_client::ConnectOptions,
    /// The application's keyspace prefix (`/folio/consumers/{app}`).
    pub prefix: String,
    /// Where shard stores live.
    pub data_dir: PathBuf,
    /// The member lease's TTL: a process that stops renewing it loses its shards after it.
    pub lease_ttl: Duration,
    /// Most shards (primaries and standbys) this process takes.
    pub shard_limit: u32,
    /// How long a stopping process waits for its primaries to move elsewhere.
    pub exit_grace: Duration,
}

/// Default [`ConsumerConfig::shard_limit`], as Gazette's.
pub const DEFAULT_SHARD_LIMIT: u32 = 1024;

/// A shard spec as stored, with its key's revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardEntry {
    /// The spec.
    pub spec: ShardSpec,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
}

/// Decodes every shard spec of `state`.
pub fn shard_specs(layout: &Layout, state: &ViewState) -> Decoded<Vec<ShardEntry>> {
    let mut decoded = Decoded {
        items: Vec::new(),
        invalid: Vec::new(),
    };
    for kv in state.range(&layout.items_prefix()) {
        let parsed = layout.parse_spec_key(&kv.key).and_then(|id| {
            let spec = ShardSpec::decode(kv.value.as_ref()).map_err(|e| {
                folio_coordination::Error::InvalidValue {
                    key: kv.key.clone(),
                    reason: format!("not a ShardSpec: {e}"),
                }
            })?;
            if spec.id != id {
                return Err(folio_coordination::Error::InvalidValue {
                    key: kv.key.clone(),
                    reason: format!("the spec's id is {:?}, not {id:?}", spec.id),
                });
            }
            Ok(spec)
        });
        match parsed {
            Ok(spec) => decoded.items.push(ShardEntry {
                spec,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            }),
            Err(err) => decoded.invalid.push(err),
        }
    }
    decoded
}

/// A shard as the allocator sees it: an item wanting `1 + hot_standbys` members, none
/// when disabled.
fn as_item(entry: &ShardEntry) -> SpecEntry {
    let suspend = entry.spec.disable.then_some(Suspend {
        level: suspend::Level::Full as i32,
        offset: 0,
    });
    SpecEntry {
        spec: JournalSpec {
            name: entry.spec.id.clone(),
            replication: 1 + entry.spec.hot_standbys.min(100) as i32,
            suspend,
            ..JournalSpec::default()
        },
        create_revision: entry.create_revision,
        mod_revision: entry.mod_revision,
    }
}

/// One allocation step when `me` leads: decide over the shards and write the changes.
/// Returns whether anything was written.
async fn allocate_once(
    keyspace: &dyn KeySpace,
    view: &KeySpaceView,
    layout: &Layout,
    me: &Id,
) -> folio_coordination::Result<bool> {
    let decided = view.read(|state| {
        let members = layout.members(state);
        let lead = leader(&members.items).filter(|m| m.id == *me)?;
        let fence = Fence {
            key: layout.member_key(&lead.id),
            create_revision: lead.create_revision,
        };
        let shards = shard_specs(layout, state);
        let assignments = layout.assignments(state);
        for err in shards.invalid.iter().chain(&assignments.invalid) {
            tracing::warn!(error = %err, "ignoring a key the allocator cannot decode");
        }
        let items: Vec<SpecEntry> = shards.items.iter().map(as_item).collect();
        let changes = allocate(&items, &members.items, &assignments.items);
        Some((fence, members.items, changes))
    });
    let Some((fence, members, changes)) = decided else {
        return Ok(false);
    };
    if changes.is_empty() {
        return Ok(false);
    }
    let outcome = write_changes(keyspace, layout, &fence, &members, &changes).await?;
    tracing::debug!(changes = changes.len(), ?outcome, "wrote shard assignments");
    view.wait_for_revision(outcome.revision).await?;
    Ok(true)
}

/// A shard running on this process.
#[derive(Debug)]
struct LocalShard {
    role: watch::Sender<Role>,
    status: watch::Receiver<ShardStatus>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// The spec revision it runs with: a changed spec restarts it.
    spec_revision: i64,
}

/// What the `Shard` service needs of a running consumer process.
#[derive(Debug)]
pub struct Consumer {
    keyspace: Arc<dyn KeySpace>,
    layout: Layout,
    view: KeySpaceView,
    id: Id,
    shards: Mutex<BTreeMap<String, LocalShard>>,
    /// Fired when a local shard's status changes, so routes are advertised.
    changed: Arc<Notify>,
    /// Until when this process's lease is known to hold.
    lease_valid_until: watch::Receiver<tokio::time::Instant>,
}

impl Consumer {
    /// The keyspace.
    pub fn keyspace(&self) -> &Arc<dyn KeySpace> {
        &self.keyspace
    }

    /// The key layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The view of the application's keys.
    pub fn view(&self) -> &KeySpaceView {
        &self.view
    }

    /// This process's member id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The status of `shard` on this process, if it runs here.
    pub fn status(&self, shard: &str) -> Option<watch::Receiver<ShardStatus>> {
        let shards = self.shards.lock().expect("shards lock");
        shards.get(shard).map(|s| s.status.clone())
    }
}

/// Starts a consumer process: announces it, and runs allocation and its shards until
/// `cancel` fires; then it marks itself exiting, waits (up to the exit grace) for its
/// primaries to move, stops its shards and leaves. Returns the [`Consumer`] (for the
/// `Shard` service) and the task running it.
pub async fn start<A: Application>(
    config: ConsumerConfig,
    keyspace: Arc<dyn KeySpace>,
    app: Arc<A>,
    cancel: CancellationToken,
) -> Result<(Arc<Consumer>, JoinHandle<Result<()>>)> {
    let coordination = |e: folio_coordination::Error| Error::Coordination(e.to_string());
    let layout = Layout::new(config.prefix.clone()).map_err(coordination)?;
    if config.shard_limit == 0 || config.shard_limit > i32::MAX as u32 {
        return Err(Error::Config(format!(
            "shard limit {} must be between 1 and {}",
            config.shard_limit,
            i32::MAX
        )));
    }
    let view_cancel = CancellationToken::new();
    let (view, view_task) = KeySpaceView::start(
        keyspace.clone(),
        layout.root(),
        ViewOptions::default(),
        view_cancel.clone(),
    )
    .await
    .map_err(coordination)?;
    let mut spec = BrokerSpec {
        process_spec: Some(ProcessSpec {
            id: Some(config.id.clone()),
            endpoint: config.endpoint.clone(),
        }),
        journal_limit: config.shard_limit as i32,
        exiting: false,
    };
    let mut membership = announce(keyspace.clone(), &layout, spec.clone(), config.lease_ttl)
        .await
        .map_err(coordination)?;
    let consumer = Arc::new(Consumer {
        keyspace: keyspace.clone(),
        layout: layout.clone(),
        view: view.clone(),
        id: config.id.clone(),
        shards: Mutex::new(BTreeMap::new()),
        changed: Arc::new(Notify::new()),
        lease_valid_until: membership.valid_until(),
    });
    let client = folio_client::connect(&config.broker, &config.broker_connect)?;

    let allocator_cancel = CancellationToken::new();
    let allocator = tokio::spawn(tracing::Instrument::instrument(
        {
            let (keyspace, view, layout, me) = (
                keyspace.clone(),
                view.clone(),
                layout.clone(),
                config.id.clone(),
            );
            let cancel = allocator_cancel.clone();
            async move {
                let mut revisions = view.subscribe();
                loop {
                    let step = cancel
                        .run_until_cancelled(allocate_once(&*keyspace, &view, &layout, &me))
                        .await;
                    match step {
                        None => return,
                        Some(Ok(true)) => continue,
                        Some(Ok(false)) => {}
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "allocating shards failed");
                            let pause = tokio::time::sleep(Duration::from_millis(200));
                            if cancel.run_until_cancelled(pause).await.is_none() {
                                return;
                            }
                            continue;
                        }
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        changed = revisions.changed() => if changed.is_err() { return },
                    }
                }
            }
        },
        tracing::info_span!("shard_allocator"),
    ));

    let task = tokio::spawn(tracing::Instrument::instrument(
        {
            let consumer = consumer.clone();
            async move {
                let mut revisions = consumer.view.subscribe();
                let mut member_status = membership.status();
                let mut exiting_since = None;
                let mut lost = None;
                loop {
                    if let MemberStatus::Lost { reason } = &*member_status.borrow() {
                        tracing::error!(
                            reason,
                            "this consumer's lease was lost: stopping every shard"
                        );
                        lost = Some(reason.clone());
                        break;
                    }
                    let mine = reconcile(&consumer, &app, &client, &config).await;
                    if cancel.is_cancelled() {
                        let since = *exiting_since.get_or_insert_with(tokio::time::Instant::now);
                        if !spec.exiting {
                            spec.exiting = true;
                            if let Err(err) = membership.update(spec.clone()).await {
                                tracing::warn!(error = %err, "marking this consumer exiting failed");
                            }
                        }
                        if mine.primaries == 0 || since.elapsed() >= config.exit_grace {
                            break;
                        }
                    }
                    tokio::select! {
                        () = cancel.cancelled(), if exiting_since.is_none() => {}
                        changed = revisions.changed() => if changed.is_err() { break },
                        () = consumer.changed.notified() => {}
                        _ = member_status.changed() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                allocator_cancel.cancel();
                let _ = allocator.await;
                let running: Vec<LocalShard> = {
                    let mut shards = consumer.shards.lock().expect("shards lock");
                    std::mem::take(&mut *shards).into_values().collect()
                };
                stop_shards(running).await;
                if let Err(err) = membership.revoke().await {
                    tracing::warn!(error = %err, "revoking this consumer's lease failed");
                }
                view_cancel.cancel();
                let _ = view_task.await;
                match lost {
                    Some(reason) => Err(Error::Coordination(format!(
                        "this consumer's membership lease was lost ({reason}); its shards are \
                     another process's now"
                    ))),
                    None => Ok(()),
                }
            }
        },
        tracing::info_span!("consumer_reconcile"),
    ));
    Ok((consumer, task))
}

/// Longest wait for cancelled shards to stop before they are aborted.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Cancels `shards` and waits for them together, aborting those still running after
/// [`STOP_WAIT`] (a shard gives way to cancellation at every await, so this is a guard).
async fn stop_shards(shards: Vec<LocalShard>) {
    for shard in &shards {
        shard.cancel.cancel();
    }
    let mut tasks: Vec<JoinHandle<()>> = shards.into_iter().map(|s| s.task).collect();
    let all = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(STOP_WAIT, all).await.is_err() {
        tracing::warn!(?STOP_WAIT, "shards did not stop in time; aborting them");
        for task in &tasks {
            task.abort();
        }
    }
}

/// What this process holds after a reconcile.
struct Mine {
    primaries: usize,
}

/// Brings the local shards in line with this process's assignments, and advertises the
/// routes of the shards it serves as primary once they are ready.
async fn reconcile<A: Application>(
    consumer: &Arc<Consumer>,
    app: &Arc<A>,
    client: &folio_client::Client,
    config: &ConsumerConfig,
) -> Mine {
    let layout = &consumer.layout;
    let (specs, assignments, members) = consumer.view.read(|state| {
        (
            shard_specs(layout, state).items,
            layout.assignments(state).items,
            layout.members(state).items,
        )
    });
    let specs: HashMap<&str, &ShardEntry> = specs.iter().map(|e| (e.spec.id.as_str(), e)).collect();
    let mut wanted: HashMap<String, (Role, &ShardEntry)> = HashMap::new();
    for (shard, list) in &assignments {
        let Some(entry) = specs.get(shard.as_str()) else {
            continue;
        };
        if let Some(a) = list.iter().find(|a| a.member == consumer.id) {
            let role = if a.slot == 0 {
                Role::Primary
            } else {
                Role::Standby
            };
            wanted.insert(shard.clone(), (role, *entry));
        }
    }

    let mut advertise = Vec::new();
    let mut to_stop = Vec::new();
    {
        let mut shards = consumer.shards.lock().expect("shards lock");
        // Stop shards no longer assigned here, changed specs, and demoted primaries.
        let ids: Vec<String> = shards.keys().cloned().collect();
        for id in ids {
            let keep = match (wanted.get(&id), shards.get(&id)) {
                (Some((role, entry)), Some(local)) => {
                    local.spec_revision == entry.mod_revision
                        && !(*role == Role::Standby && *local.role.borrow() == Role::Primary)
                        && !local.task.is_finished()
                }
                _ => false,
            };
            if !keep && let Some(local) = shards.remove(&id) {
                local.cancel.cancel();
                to_stop.push(local);
            }
        }
        for (id, (role, entry)) in &wanted {
            match shards.get(id) {
                Some(local) => {
                    if *role == Role::Primary && *local.role.borrow() == Role::Standby {
                        tracing::info!(shard = %id, "promoted to primary");
                        let _ = local.role.send(Role::Primary);
                    }
                    let ready = local.status.borrow().code == replica_status::Code::Primary;
                    if *role == Role::Primary && ready {
                        advertise.push(id.clone());
                    }
                }
                None => {
                    let local = spawn_shard(consumer, app, client, config, entry, *role);
                    shards.insert(id.clone(), local);
                }
            }
        }
    }
    // A stopped shard lets go of its store before another run of it opens it.
    stop_shards(to_stop).await;
    for id in &advertise {
        if let Some(list) = assignments.get(id) {
            advertise_shard(consumer, id, list, &members).await;
        }
    }
    Mine {
        primaries: wanted.values().filter(|(r, _)| *r == Role::Primary).count(),
    }
}

async fn advertise_shard(
    consumer: &Consumer,
    shard: &str,
    list: &[Assignment],
    members: &[Member],
) {
    if let Some(txn) = advertise_route(&consumer.layout, shard, list, members) {
        match consumer.keyspace.txn(txn).await {
            Ok(resp) if resp.succeeded => {
                tracing::debug!(
                    shard,
                    revision = resp.revision,
                    "advertised the shard's route"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(shard, error = %err, "advertising the route failed"),
        }
    }
}

/// The store file of `shard` under `data_dir`: the id with `/` and `%` escaped.
pub fn store_path(data_dir: &std::path::Path, shard: &str) -> PathBuf {
    let name = shard.replace('%', "%25").replace('/', "%2F");
    data_dir.join("shards").join(format!("{name}.redb"))
}

fn spawn_shard<A: Application>(
    consumer: &Arc<Consumer>,
    app: &Arc<A>,
    client: &folio_client::Client,
    config: &ConsumerConfig,
    entry: &ShardEntry,
    role: Role,
) -> LocalShard {
    let ctx = ShardContext {
        client: client.clone(),
        spec: entry.spec.clone(),
        store_path: store_path(&config.data_dir, &entry.spec.id),
        lease_valid_until: Some(consumer.lease_valid_until.clone()),
    };
    let (role_tx, role_rx) = watch::channel(role);
    let (status_tx, status_rx) = watch::channel(ShardStatus::default());
    let cancel = CancellationToken::new();
    let span = tracing::info_span!("shard", shard = %entry.spec.id);
    let task = tokio::spawn(tracing::Instrument::instrument(
        supervise(
            app.clone(),
            ctx,
            role_rx,
            status_tx,
            cancel.clone(),
            consumer.changed.clone(),
        ),
        span,
    ));
    LocalShard {
        role: role_tx,
        status: status_rx,
        cancel,
        task,
        spec_revision: entry.mod_revision,
    }
}

/// How long a shard that was fenced out (or whose process's lease may have expired)
/// waits before it may take its log over again.
const FENCED_PAUSE: Duration = Duration::from_secs(10);

/// Runs a shard until cancelled, restarting it (after a growing delay) when it fails.
async fn supervise<A: Application>(
    app: Arc<A>,
    ctx: ShardContext,
    role: watch::Receiver<Role>,
    status: watch::Sender<ShardStatus>,
    cancel: CancellationToken,
    changed: Arc<Notify>,
) {
    let mut delay = Duration::from_millis(100);
    // The process reconciles when a shard's code changes (a primary ready to advertise
    // its route), not on every commit.
    let mut watch_status = status.subscribe();
    let notify = {
        let changed = changed.clone();
        async move {
            let mut code = watch_status.borrow().code;
            while watch_status.changed().await.is_ok() {
                let now = watch_status.borrow().code;
                if now != code {
                    code = now;
                    changed.notify_one();
                }
            }
        }
    };
    let notifier = tokio::spawn(tracing::Instrument::in_current_span(notify));
    loop {
        let run = shard::run(
            app.clone(),
            ctx.clone(),
            role.clone(),
            status.clone(),
            cancel.clone(),
        );
        let pause = match run.await {
            Ok(()) => break,
            // Another primary holds the log, or this process may have lost the shard:
            // taking the log back at once would fight the rightful primary. The view
            // catches up meanwhile, and the shard is stopped here if it moved.
            Err(err @ (Error::Fenced { .. } | Error::LeaseExpired { .. })) => {
                tracing::warn!(shard = %ctx.spec.id, error = %err, pause = ?FENCED_PAUSE, "shard stopped");
                status.send_modify(|s| {
                    s.code = replica_status::Code::Failed;
                    s.errors = vec![err.to_string()];
                });
                FENCED_PAUSE
            }
            Err(err) => {
                tracing::warn!(shard = %ctx.spec.id, error = %err, ?delay, "shard failed; restarting");
                status.send_modify(|s| {
                    s.code = replica_status::Code::Failed;
                    s.errors = vec![err.to_string()];
                });
                let pause = delay;
                delay = (delay * 2).min(Duration::from_secs(5));
                pause
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    notifier.abort();
}
