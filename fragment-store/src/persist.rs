//! Persisting a closed fragment: compress with its codec, upload create-only.
//!
//! Compression runs on a blocking thread and hands finished parts to the uploader over
//! a bounded channel, so compressing part N+1 overlaps uploading part N and memory stays
//! within `(parts_in_flight + 2) * part_size`. A fragment that compresses to less than one
//! part is a single create-only PUT; a larger one is a multipart upload, after checking
//! that the file is not already there. A file already present under the same name counts
//! as success: names are content-addressed (begin, end, SHA-1, codec), so it holds the
//! same bytes. Transient store errors are retried with exponential backoff, a bounded
//! number of times.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

use crate::codec::compressor;
use crate::fragment_name::format_fragment_path;
use crate::store::FragmentStore;
use crate::{Error, Result};

/// Tuning of [`persist`].
#[derive(Debug, Clone)]
pub struct PersistOptions {
    /// Size of each uploaded part of compressed bytes (at least 5 MiB for S3).
    pub part_size: usize,
    /// Parts uploaded concurrently in a multipart upload.
    pub parts_in_flight: usize,
    /// Attempts of the whole upload before giving up on a transient error.
    pub max_attempts: u32,
    /// First retry delay (before jitter); doubled each attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Re-hash the content and refuse to upload when it does not match the fragment's
    /// SHA-1. Off by default: the spool computed the sum as content arrived, and hashing
    /// again costs a third of zstd's throughput.
    pub verify_sum: bool,
}

impl Default for PersistOptions {
    fn default() -> Self {
        Self {
            part_size: 8 << 20,
            parts_in_flight: 2,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            verify_sum: false,
        }
    }
}

/// The stored fragment of `fragment` when its file is already in `store` (another replica
/// uploaded it), found with one HEAD; `None` when it is not there. A replica asks this
/// before uploading a fragment its primary is expected to have uploaded.
pub async fn find_persisted(
    store: &FragmentStore,
    fragment: &Fragment,
) -> Result<Option<Fragment>> {
    let name = format_fragment_path(fragment);
    let path = store.path(&name)?;
    match store.object_store().head(&path).await {
        Ok(meta) => Ok(Some(Fragment {
            backing_store: store.url().to_owned(),
            mod_time: meta.last_modified.timestamp(),
            ..fragment.clone()
        })),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(Error::store("head", path, source)),
    }
}

/// Uploads `content` (the fragment's uncompressed bytes, in order, as chunks) as the
/// fragment file of `fragment`, and returns the stored fragment: `backing_store` set to
/// the store URL and `mod_time` to the upload time.
pub async fn persist(
    store: &FragmentStore,
    fragment: &Fragment,
    content: &[Bytes],
    options: &PersistOptions,
) -> Result<Fragment> {
    let name = format_fragment_path(fragment);
    check_fragment(fragment, content, &name)?;
    let path = store.path(&name)?;

    // Jittered, so brokers retrying against a store that failed them all at once do not
    // come back all at once.
    let mut delays = ExponentialBuilder::new()
        .with_factor(2.0)
        .with_min_delay(options.initial_backoff)
        .with_max_delay(options.max_backoff)
        .with_max_times(options.max_attempts.saturating_sub(1) as usize)
        .with_jitter()
        .build();
    let mut attempt = 1;
    loop {
        match persist_once(store, fragment, content, &path, options).await {
            Ok(()) => break,
            Err(err) if err.is_retryable() => {
                let Some(delay) = delays.next() else {
                    return Err(err);
                };
                tracing::warn!(%err, attempt, file = %path, ?delay, "persist failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
    let mod_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Fragment {
        backing_store: store.url().to_owned(),
        mod_time,
        ..fragment.clone()
    })
}

fn check_fragment(fragment: &Fragment, content: &[Bytes], name: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidFragment {
        fragment: name.to_owned(),
        reason,
    };
    folio_protocol::validate_journal_name(&fragment.journal).map_err(|e| invalid(e.to_string()))?;
    if fragment.begin < 0 || fragment.end < fragment.begin {
        return Err(invalid(format!(
            "span [{}, {}) is not valid",
            fragment.begin, fragment.end
        )));
    }
    if fragment.codec() == CompressionCodec::Invalid {
        return Err(invalid("codec is INVALID".into()));
    }
    let len: usize = content.iter().map(Bytes::len).sum();
    if len as i64 != fragment.content_length() {
        return Err(invalid(format!(
            "content is {len} bytes but the span is {} bytes",
            fragment.content_length()
        )));
    }
    Ok(())
}

async fn persist_once(
    store: &FragmentStore,
    fragment: &Fragment,
    content: &[Bytes],
    path: &Path,
    options: &PersistOptions,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<PutPayload>(1);
    let codec = fragment.codec();
    let chunks = content.to_vec();
    let part_size = options.part_size.max(1);
    let expect_sum = options.verify_sum.then(|| fragment.sha1());
    let label = path.to_string();
    let compress = if codec == CompressionCodec::None && expect_sum.is_none() {
        // Uncompressed: each part is a list of slices of the content's own chunks, so
        // nothing is copied before the bytes reach the socket.
        let parts = raw_parts(&chunks, part_size);
        tokio::spawn(async move {
            for part in parts {
                if tx.send(part).await.is_err() {
                    break; // The uploader stopped: its error is the one to report.
                }
            }
            Ok(())
        })
    } else {
        tokio::task::spawn_blocking(move || {
            compress_into_parts(codec, &chunks, part_size, tx, expect_sum, &label)
        })
    };

    let attributes = content_attributes(codec);
    let first = rx.recv().await.unwrap_or_default();
    let upload = match rx.recv().await {
        None => {
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes,
                ..Default::default()
            };
            match store.object_store().put_opts(path, first, opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(Error::store("put", path, e)),
            }
        }
        Some(second) => {
            upload_multipart(store, path, attributes, [first, second], &mut rx, options).await
        }
    };
    // Drain so the compressor never blocks on a full channel after an upload error.
    drop(rx);
    let compressed = compress
        .await
        .map_err(|e| Error::io("compression task", io::Error::other(e)))?;
    compressed?;
    upload
}

async fn upload_multipart(
    store: &FragmentStore,
    path: &Path,
    attributes: Attributes,
    first: [PutPayload; 2],
    rx: &mut mpsc::Receiver<PutPayload>,
    options: &PersistOptions,
) -> Result<()> {
    let objects = store.object_store();
    if objects.head(path).await.is_ok() {
        return Ok(()); // Already persisted, by us or by a peer.
    }
    let opts = PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let mut upload = objects
        .put_multipart_opts(path, opts)
        .await
        .map_err(|e| Error::store("put", path, e))?;
    let mut in_flight = FuturesUnordered::new();
    let mut pending = first.into_iter();
    let result: Result<()> = async {
        loop {
            let part = match pending.next() {
                Some(part) => part,
                None => match rx.recv().await {
                    Some(part) => part,
                    None => break,
                },
            };
            in_flight.push(upload.put_part(part));
            while in_flight.len() >= options.parts_in_flight.max(1) {
                if let Some(done) = in_flight.next().await {
                    done.map_err(|e| Error::store("put part", path, e))?;
                }
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(|e| Error::store("put part", path, e))?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            upload
                .complete()
                .await
                .map_err(|e| Error::store("complete multipart", path, e))?;
            Ok(())
        }
        Err(err) => {
            drop(in_flight);
            if let Err(abort) = upload.abort().await {
                tracing::warn!(%abort, file = %path, "aborting multipart upload failed");
            }
            Err(err)
        }
    }
}

fn content_attributes(codec: CompressionCodec) -> Attributes {
    let mut attributes = Attributes::new();
    if codec == CompressionCodec::GzipOffloadDecompression {
        attributes.insert(Attribute::ContentEncoding, "gzip".into());
    }
    attributes
}

/// Uncompressed content cut into parts of `part_size` bytes (the last shorter), each a
/// list of slices of `chunks`: no byte is copied. Empty content is one empty part, so the
/// uploader writes an empty file.
fn raw_parts(chunks: &[Bytes], part_size: usize) -> Vec<PutPayload> {
    let mut parts = Vec::new();
    let mut part: Vec<Bytes> = Vec::new();
    let mut len = 0;
    for chunk in chunks {
        let mut rest = chunk.clone();
        while !rest.is_empty() {
            let take = (part_size - len).min(rest.len());
            part.push(rest.split_to(take));
            len += take;
            if len == part_size {
                parts.push(part.drain(..).collect());
                len = 0;
            }
        }
    }
    if len > 0 || parts.is_empty() {
        parts.push(part.into_iter().collect());
    }
    parts
}

/// Runs on a blocking thread: compresses `chunks` and sends parts of `part_size` bytes.
fn compress_into_parts(
    codec: CompressionCodec,
    chunks: &[Bytes],
    part_size: usize,
    tx: mpsc::Sender<PutPayload>,
    expect_sum: Option<Sha1Sum>,
    label: &str,
) -> Result<()> {
    let sink = PartSink {
        buf: Vec::with_capacity(part_size),
        part_size,
        tx,
        sent_any: false,
    };
    let mut enc = compressor(codec, sink)?;
    let mut hasher = expect_sum.map(|_| Sha1::new());
    for chunk in chunks {
        if let Some(h) = hasher.as_mut() {
            h.update(chunk);
        }
        if let Err(e) = enc.write_all(chunk) {
            // The uploader stopped listening: its error is the one to report.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(Error::io(format!("compressing {label}"), e));
        }
    }
    if let (Some(h), Some(expected)) = (hasher, expect_sum) {
        let actual = Sha1Sum::from_digest(h.finalize().into());
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                path: label.to_owned(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    let sink = enc
        .finish()
        .map_err(|e| Error::io(format!("compressing {label}"), e))?;
    sink.close();
    Ok(())
}

/// Collects compressed bytes into parts and hands each full part to the uploader.
struct PartSink {
    buf: Vec<u8>,
    part_size: usize,
    tx: mpsc::Sender<PutPayload>,
    sent_any: bool,
}

impl PartSink {
    fn send(&mut self) -> io::Result<()> {
        let part = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.part_size),
        ));
        self.sent_any = true;
        self.tx
            .blocking_send(PutPayload::from(part))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Sends the final short part, if any; the channel then closes. An empty stream
    /// still sends one (empty) part, so the uploader writes an empty file.
    fn close(mut self) {
        if !self.buf.is_empty() || !self.sent_any {
            let _ = self.send();
        }
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_of(part: &PutPayload) -> Vec<u8> {
        part.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn empty_content_is_one_empty_part() {
        let parts = raw_parts(&[], 8);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].content_length(), 0);
    }

    proptest! {
        #[test]
        fn raw_parts_cut_the_content_without_losing_a_byte(
            lens in proptest::collection::vec(0usize..40, 0..12),
            part_size in 1usize..32,
        ) {
            let chunks: Vec<Bytes> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
                .collect();
            let parts = raw_parts(&chunks, part_size);
            let joined: Vec<u8> = parts.iter().flat_map(bytes_of).collect();
            prop_assert_eq!(joined, chunks.concat());
            for part in &parts[..parts.len() - 1] {
                prop_assert_eq!(part.content_length(), part_size);
            }
            prop_assert!(parts.last().expect("a part").content_length() <= part_size);
        }
    }
}
