//! Reads: locating an offset in the spool, in closed fragments still in memory, or in the
//! store; streaming it, or handing out a signed URL; passing over corrupt files.

use folio_fragment_store::index::{Lookup, same_file};
use folio_fragment_store::read::{read_fragment, read_whole};
use folio_fragment_store::sign::signed_url;

use crate::spool::read_chunks;

use super::*;

/// Longest a read waits for a fresh store listing before it skips a gap.
const RELIST_BOUND: Duration = Duration::from_secs(5);

/// Longest a read waits at offsets its primary took over from a peer at a sync, for that
/// peer's upload of them, before it skips them.
const ADOPTED_UPLOAD_BOUND: Duration = Duration::from_secs(30);

impl Replica {
    /// Reads per `params`, as a stream of events. Blocking reads end when the replica
    /// shuts down.
    pub fn read(&self, params: ReadParams) -> mpsc::Receiver<Result<ReadEvent>> {
        let (tx, rx) = mpsc::channel(8);
        let replica = self.clone();
        let span = tracing::info_span!("read", journal = %self.inner.name, offset = params.offset);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(err) = replica.read_into(params, &tx).await {
                    let _ = tx.send(Err(err)).await;
                }
            },
            span,
        ));
        rx
    }

    async fn read_into(
        &self,
        params: ReadParams,
        tx: &mpsc::Sender<Result<ReadEvent>>,
    ) -> Result<()> {
        if !self.spec().may_read() {
            return Err(Error::NotAllowed("reads"));
        }
        self.wait_listed().await?;
        let mut head_rx = self.inner.head.subscribe();
        let mut offset = if params.offset < 0 {
            self.write_head()
        } else {
            params.offset
        };
        let mut announced: Option<(i64, i64)> = None;
        // The offset at which a corrupt file was set aside, and its error.
        let mut corrupt_at: Option<(i64, Error)> = None;
        // The gap this read listed the stores again for, once, before skipping it.
        let mut relisted_at: Option<i64> = None;
        // The gap this read has been waiting at for a peer's upload, and since when.
        let mut waited_since: Option<(i64, tokio::time::Instant)> = None;
        loop {
            if params.end_offset > 0 && offset >= params.end_offset {
                return Ok(());
            }
            let head = *head_rx.borrow_and_update();
            if offset >= head {
                if !params.block {
                    return Err(Error::OffsetNotYetAvailable {
                        offset,
                        write_head: head,
                    });
                }
                tokio::select! {
                    changed = head_rx.changed() => if changed.is_err() { return Ok(()) },
                    () = self.inner.cancel.cancelled() => return Ok(()),
                    () = tx.closed() => return Ok(()),
                }
                continue;
            }
            // Nothing past the write head: a replica may hold committed bytes its primary
            // has not confirmed yet.
            let max = match params.end_offset {
                0 => READ_CHUNK,
                end => READ_CHUNK.min((end - offset) as usize),
            }
            .min((head - offset) as usize);
            match self.locate(offset, max) {
                Located::Memory { fragment, content } => {
                    if announced != Some((fragment.begin, fragment.end)) || params.metadata_only {
                        announced = Some((fragment.begin, fragment.end));
                        let meta = ReadEvent::Metadata {
                            offset,
                            write_head: head,
                            fragment,
                            fragment_url: None,
                        };
                        if tx.send(Ok(meta)).await.is_err() || params.metadata_only {
                            return Ok(());
                        }
                    }
                    for chunk in content {
                        metrics::counter!(crate::metrics::READ_BYTES_SPOOL)
                            .increment(chunk.len() as u64);
                        if !send_content(tx, &mut offset, chunk).await {
                            return Ok(());
                        }
                    }
                }
                Located::Store { fragment, store } => {
                    announced = None;
                    let url = if params.do_not_proxy {
                        Some(signed_url(&store, &fragment, self.inner.config.signed_url_ttl).await?)
                    } else {
                        None
                    };
                    let meta = ReadEvent::Metadata {
                        offset,
                        write_head: head,
                        fragment: fragment.clone(),
                        fragment_url: url,
                    };
                    let hand_off = params.do_not_proxy || params.metadata_only;
                    if tx.send(Ok(meta)).await.is_err() || hand_off {
                        if params.do_not_proxy {
                            metrics::counter!(crate::metrics::READ_SIGNED_URLS).increment(1);
                        }
                        return Ok(());
                    }
                    let end = match params.end_offset {
                        0 => fragment.end,
                        e => e.min(fragment.end),
                    };
                    let from = offset;
                    match self
                        .stream_stored(&store, &fragment, &mut offset, end, tx)
                        .await
                    {
                        Ok(true) => corrupt_at = None,
                        Ok(false) => return Ok(()),
                        Err(err) if is_corrupt(&err) && self.has_alternative(&fragment) => {
                            // Only a file others can stand in for is set aside: the only
                            // copy of some offsets keeps answering its error (which may
                            // have been the network's, not the file's).
                            self.set_aside(&fragment, &err);
                            if offset != from {
                                // The reader already has bytes of this file: it must not
                                // take the rest from another as if nothing happened.
                                return Err(err);
                            }
                            // Another listed file may hold the same offsets: look again,
                            // and answer this error only if none does.
                            corrupt_at = Some((offset, err));
                        }
                        Err(Error::Store(err))
                            if err.is_not_found() && relisted_at != Some(offset) =>
                        {
                            // The file was removed since it was listed (compaction merged
                            // it into a larger file holding the same bytes, or retention
                            // pruned it): list again and read on from what holds the
                            // offset now.
                            relisted_at = Some(offset);
                            self.relist(RELIST_BOUND).await;
                        }
                        Err(err) => return Err(err),
                    }
                }
                Located::Corrupt { fragment, reason } => {
                    return Err(Error::Store(folio_fragment_store::Error::Corrupt {
                        path: file_key(&fragment),
                        codec: fragment.codec().as_str_name().to_owned(),
                        reason: format!("set aside earlier as corrupt ({reason})"),
                    }));
                }
                Located::Gap { next } => {
                    if let Some((at, err)) = corrupt_at.take()
                        && at == offset
                    {
                        // The corrupt file was the only one holding these offsets.
                        return Err(err);
                    }
                    // Content below the next fragment is gone (pruned) or was never
                    // written: continue at the next fragment, and say so via `offset`.
                    let Some(next) = next else {
                        return Err(Error::OffsetNotYetAvailable {
                            offset,
                            write_head: head,
                        });
                    };
                    // Below the write head, the content may be in a file another member
                    // of the route uploaded since the last listing (after a hand-off or
                    // a promotion): list once more before skipping it.
                    if relisted_at != Some(offset) {
                        relisted_at = Some(offset);
                        if self.relist(RELIST_BOUND).await {
                            continue;
                        }
                    }
                    // Offsets this replica's spool moved past at a sync are in another
                    // member's upload, on its way: wait for it (bounded), never skip them.
                    if self.awaits_upload(offset) {
                        if waited_since.is_none_or(|(at, _)| at != offset) {
                            waited_since = Some((offset, tokio::time::Instant::now()));
                        }
                        let since = waited_since.map_or(tokio::time::Instant::now(), |(_, t)| t);
                        if since.elapsed() < ADOPTED_UPLOAD_BOUND {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                                () = self.inner.cancel.cancelled() => return Ok(()),
                                () = tx.closed() => return Ok(()),
                            }
                            self.relist(RELIST_BOUND).await;
                            continue;
                        }
                        tracing::warn!(journal = %self.inner.name, from = offset, to = next,
                            "content other members held at a sync was not uploaded in time; the read skips it");
                    }
                    tracing::debug!(journal = %self.inner.name, from = offset, to = next, "read skips a gap");
                    offset = next;
                }
            }
        }
    }

    /// Streams `[offset, end)` of a persisted fragment, advancing `offset`. Returns false
    /// when the reader went away. When the listing holds other files overlapping this
    /// one, the fragment is read whole and its SHA-1 checked before any byte is sent, so
    /// a corrupt file can be passed over for the others without the reader having seen
    /// any of its bytes.
    async fn stream_stored(
        &self,
        store: &FragmentStore,
        fragment: &Fragment,
        offset: &mut i64,
        end: i64,
        tx: &mpsc::Sender<Result<ReadEvent>>,
    ) -> Result<bool> {
        if self.has_alternative(fragment) && fragment.content_length() <= VERIFY_BEFORE_SENDING {
            // Bounded: such reads hold a whole file in memory, outside the budget.
            let _slot = self
                .inner
                .config
                .verify_slots
                .acquire()
                .await
                .expect("the verify slots are never closed");
            let whole = read_whole(store, fragment).await?;
            let from = (*offset - fragment.begin) as usize;
            let to = (end - fragment.begin) as usize;
            let mut at = from;
            while at < to {
                let next = (at + READ_CHUNK).min(to);
                metrics::counter!(crate::metrics::READ_BYTES_STORE).increment((next - at) as u64);
                if !send_content(tx, offset, whole.slice(at..next)).await {
                    return Ok(false);
                }
                at = next;
            }
            return Ok(true);
        }
        let mut reader = read_fragment(store, fragment, *offset).await?;
        while let Some(chunk) = reader.next().await {
            let mut chunk = chunk?;
            if *offset + chunk.len() as i64 > end {
                chunk.truncate((end - *offset) as usize);
            }
            metrics::counter!(crate::metrics::READ_BYTES_STORE).increment(chunk.len() as u64);
            if !chunk.is_empty() && !send_content(tx, offset, chunk).await {
                return Ok(false);
            }
            // Reading on to the fragment's end yields the reader's final length and SHA-1
            // verdict, so stop early only when the read ends inside the fragment.
            if *offset >= end && end < fragment.end {
                break;
            }
        }
        Ok(true)
    }

    /// Whether the last listing holds another usable file overlapping `fragment`.
    fn has_alternative(&self, fragment: &Fragment) -> bool {
        let state = self.lock_state();
        state.listing.iter().any(|f| {
            f.begin < fragment.end
                && fragment.begin < f.end
                && !same_file(f, fragment)
                && !state.corrupt.contains_key(&file_key(f))
        })
    }

    /// Takes a corrupt file out of the index (for good: later listings skip it too) and
    /// puts back the listed files it covered. The file is logged once.
    fn set_aside(&self, fragment: &Fragment, err: &Error) {
        let mut state = self.lock_state();
        if state
            .corrupt
            .insert(file_key(fragment), err.to_string())
            .is_none()
        {
            tracing::error!(journal = %self.inner.name, file = %file_key(fragment), %err,
                "fragment file is corrupt; reading the journal from other files from now on");
        }
        state.index.remove(fragment);
        let covered: Vec<Fragment> = state
            .listing
            .iter()
            .filter(|f| f.begin < fragment.end && fragment.begin < f.end)
            .filter(|f| !state.corrupt.contains_key(&file_key(f)))
            .cloned()
            .collect();
        for f in covered {
            state.index.insert(f);
        }
    }

    fn locate(&self, offset: i64, max: usize) -> Located {
        let state = self.lock_state();
        let spool = &state.spool;
        if offset >= spool.begin() && offset < spool.end() {
            return Located::Memory {
                fragment: spool.fragment(),
                content: spool.read(offset, max),
            };
        }
        if let Some((_, (fragment, chunks, starts))) = state.local.range(..=offset).next_back()
            && fragment.contains(offset)
        {
            let content = read_chunks(chunks, starts, offset, fragment.end, max);
            return Located::Memory {
                fragment: fragment.clone(),
                content,
            };
        }
        match state.index.query(offset) {
            Lookup::Covered(fragment) => {
                let store = self
                    .inner
                    .stores
                    .iter()
                    .find(|s| s.url() == fragment.backing_store)
                    .or(self.inner.stores.first())
                    .cloned();
                match store {
                    Some(store) => Located::Store { fragment, store },
                    None => Located::Gap { next: None },
                }
            }
            Lookup::Gap { next } => {
                // A gap left by a file set aside as corrupt is lost content, not pruned
                // content: say so rather than skip it.
                if let Some((fragment, reason)) = state.listing.iter().find_map(|f| {
                    let reason = state.corrupt.get(&file_key(f))?;
                    f.contains(offset).then(|| (f.clone(), reason.clone()))
                }) {
                    return Located::Corrupt { fragment, reason };
                }
                let local_next = state.local.range(offset..).next().map(|(b, _)| *b);
                let spool_next =
                    (spool.begin() > offset && !spool.is_empty()).then_some(spool.begin());
                let candidates = [next.map(|f| f.begin), local_next, spool_next];
                Located::Gap {
                    next: candidates.into_iter().flatten().min(),
                }
            }
        }
    }
}

/// Whether a store error means the file itself is bad (not the store unreachable).
fn is_corrupt(err: &Error) -> bool {
    use folio_fragment_store::Error as E;
    matches!(
        err,
        Error::Store(E::Corrupt { .. } | E::ChecksumMismatch { .. })
    )
}

/// A fragment file's identity across stores: its store and path.
impl Replica {
    /// Whether `offset` lies in content this replica's spool moved past at a sync, which
    /// other members hold and upload (see `Replica::held_elsewhere`).
    fn awaits_upload(&self, offset: i64) -> bool {
        lock(&self.inner.awaited)
            .iter()
            .any(|&(begin, end)| begin <= offset && offset < end)
    }
}

pub(super) fn file_key(fragment: &Fragment) -> String {
    format!(
        "{}{}",
        fragment.backing_store,
        folio_fragment_store::format_fragment_path(fragment)
    )
}

/// Sends content at `offset` and advances it; false when the reader went away.
async fn send_content(
    tx: &mpsc::Sender<Result<ReadEvent>>,
    offset: &mut i64,
    content: Bytes,
) -> bool {
    let len = content.len() as i64;
    let sent = tx
        .send(Ok(ReadEvent::Content {
            offset: *offset,
            content,
        }))
        .await
        .is_ok();
    *offset += len;
    sent
}

enum Located {
    Memory {
        fragment: Fragment,
        content: Vec<Bytes>,
    },
    Store {
        fragment: Fragment,
        store: FragmentStore,
    },
    Gap {
        next: Option<i64>,
    },
    /// Only a file set aside as corrupt held the offset.
    Corrupt {
        fragment: Fragment,
        reason: String,
    },
}
