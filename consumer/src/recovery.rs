//! Recovering a shard's store from its recovery log, following the log as a standby, and
//! fencing the log when taking the shard over.

use std::future::Future;

use folio_client::framing::FrameSplitter;
use folio_client::{AppendOptions, Appender, Client, LabelSelector, LabelSet, ReadOptions, Reader};
use folio_protocol::Label;
use futures::StreamExt;
use prost::Message;

use crate::record::{AUTHOR_REGISTER, LogRecord};
use crate::store::Store;
use crate::{Error, Result};

/// Most bytes of records applied in one store transaction while replaying.
const REPLAY_BATCH: usize = 4 << 20;

/// Applies `records` (ending at log offset `through`) to `store` on a blocking thread.
pub(crate) async fn apply(store: &Store, records: Vec<LogRecord>, through: i64) -> Result<()> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.apply(&records, through))
        .await
        .map_err(|e| Error::Store(format!("applying records panicked: {e}")))?
}

/// Reads `log` from the store's position and applies its records, until `end` (when
/// given) or until `stop` resolves, calling `applied` with each offset applied through.
/// Returns the offset applied through.
pub(crate) async fn follow(
    client: &Client,
    log: &str,
    store: &Store,
    end: Option<i64>,
    stop: impl Future<Output = ()>,
    applied: impl Fn(i64),
) -> Result<i64> {
    let mut at = store.applied_through()?;
    if end.is_some_and(|end| at >= end) {
        return Ok(at);
    }
    let options = ReadOptions {
        offset: at,
        end_offset: end.unwrap_or(0),
        block: true,
        ..ReadOptions::default()
    };
    let mut reader = Reader::new(client.clone(), log, options)?;
    let mut splitter = FrameSplitter::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    // The offset after the last whole record read.
    let mut through = at;
    tokio::pin!(stop);
    loop {
        let chunk = tokio::select! {
            biased;
            () = &mut stop => break,
            chunk = reader.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk?;
        let expected = through + splitter.held() as i64;
        if chunk.offset != expected {
            return Err(Error::Log(format!(
                "recovery log {log:?} has no content at [{expected}, {}): it cannot be replayed",
                chunk.offset
            )));
        }
        for payload in splitter.push(&chunk.content) {
            batch_bytes += payload.len();
            let record = LogRecord::decode(payload)
                .map_err(|e| Error::Log(format!("a record of {log:?} does not decode: {e}")))?;
            batch.push(record);
        }
        if splitter.skipped() > 0 {
            return Err(Error::Log(format!(
                "recovery log {log:?} has {} bytes that are not records before offset {}",
                splitter.skipped(),
                chunk.end()
            )));
        }
        through = chunk.end() - splitter.held() as i64;
        // A standby applies what it read at once; a replay in batches.
        if through > at && (end.is_none() || batch_bytes >= REPLAY_BATCH || Some(through) == end) {
            apply(store, std::mem::take(&mut batch), through).await?;
            batch_bytes = 0;
            at = through;
            applied(at);
        }
    }
    if through > at {
        apply(store, batch, through).await?;
        at = through;
        applied(at);
    }
    Ok(at)
}

/// The label selector matching exactly the author values of `registers`, or no author.
fn authors_selector(registers: &LabelSet) -> (LabelSelector, LabelSet) {
    let authors: Vec<Label> = registers
        .labels
        .iter()
        .filter(|l| l.name == AUTHOR_REGISTER)
        .cloned()
        .collect();
    let selector = if authors.is_empty() {
        let any = Label {
            name: AUTHOR_REGISTER.to_owned(),
            ..Label::default()
        };
        LabelSelector {
            include: None,
            exclude: Some(LabelSet { labels: vec![any] }),
        }
    } else {
        LabelSelector {
            include: Some(LabelSet {
                labels: authors.clone(),
            }),
            exclude: None,
        }
    };
    (selector, LabelSet { labels: authors })
}

/// The register value of `author`.
pub(crate) fn author_label(author: u64) -> Label {
    Label {
        name: AUTHOR_REGISTER.to_owned(),
        value: format!("{author:016x}"),
        prefix: false,
    }
}

/// The registers check of every append `author` makes to its recovery log.
pub(crate) fn author_check(author: u64) -> LabelSelector {
    LabelSelector {
        include: Some(LabelSet {
            labels: vec![author_label(author)],
        }),
        exclude: None,
    }
}

/// Makes `author` the only one who may append to `log`: reads the log's registers (with a
/// fence record), then replaces the author register, guarded on it being unchanged.
/// Returns the log's write head after the fence: everything earlier authors committed is
/// before it.
pub(crate) async fn fence(appender: &Appender, log: &str, author: u64) -> Result<i64> {
    let frame = LogRecord::fence(author)
        .frame()
        .map_err(|e| Error::Log(e.to_string()))?;
    for _ in 0..16 {
        let probe = match appender
            .append(log, frame.clone(), &AppendOptions::default())
            .await
        {
            Ok(probe) => probe,
            Err(folio_client::Error::Status {
                status: folio_protocol::Status::JournalNotFound,
                ..
            }) => {
                return Err(Error::Log(format!(
                    "recovery log journal {log:?} does not exist: create it (folio journals apply) \
                     before the shard can run"
                )));
            }
            Err(err) => return Err(err.into()),
        };
        let (check, previous) = authors_selector(&probe.registers);
        let options = AppendOptions {
            check_registers: Some(check),
            union_registers: Some(LabelSet {
                labels: vec![author_label(author)],
            }),
            subtract_registers: Some(previous),
            ..AppendOptions::default()
        };
        match appender.append(log, frame.clone(), &options).await {
            Ok(done) => return Ok(done.commit.end),
            Err(folio_client::Error::Status {
                status: folio_protocol::Status::RegisterMismatch,
                ..
            }) => {
                tracing::info!(log, "another primary fenced the log meanwhile; again");
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Log(format!(
        "could not fence recovery log {log:?}: its author register kept changing"
    )))
}
