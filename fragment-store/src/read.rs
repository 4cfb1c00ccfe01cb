//! Reading a fragment file: from an offset inside it, decompressed, streamed.
//!
//! The object's bytes are decoded on a blocking thread and handed over in chunks through
//! a bounded channel, so memory stays at a few chunks whatever the fragment's size. Reads
//! of an uncompressed fragment from an offset fetch only the range they need; compressed
//! ones decompress from the start and skip. Every read checks that the file decodes to
//! exactly the span its name says, and a read of the whole fragment also checks its
//! SHA-1: a corrupt, truncated or mislabelled file is an error naming it, never wrong bytes.

use std::io::{self, BufReader, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::codec::decompressor;
use crate::fragment_name::format_fragment_path;
use crate::store::FragmentStore;
use crate::{Error, Result};

/// Bytes handed to the reader at a time.
const CHUNK: usize = 128 << 10;

/// Decompressed content of one fragment from some offset, as a stream of chunks. The
/// last item is an error if the file turned out corrupt, truncated or mislabelled.
pub struct FragmentReader {
    rx: mpsc::Receiver<Result<Bytes>>,
}

impl std::fmt::Debug for FragmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FragmentReader")
    }
}

impl Stream for FragmentReader {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Opens the fragment's file in `store` and streams its content from `offset`
/// (`fragment.begin <= offset <= fragment.end`).
pub async fn read_fragment(
    store: &FragmentStore,
    fragment: &Fragment,
    offset: i64,
) -> Result<FragmentReader> {
    let name = format_fragment_path(fragment);
    if offset < fragment.begin || offset > fragment.end {
        return Err(Error::InvalidFragment {
            fragment: name,
            reason: format!(
                "offset {offset} is outside [{}, {})",
                fragment.begin, fragment.end
            ),
        });
    }
    let path = store.path(&name)?;
    let label = format!("{}{name}", store.url());
    if offset == fragment.end && fragment.end > fragment.begin {
        // Nothing left to read; an empty stream (ranged GETs past the end are errors).
        let (_, rx) = mpsc::channel(1);
        return Ok(FragmentReader { rx });
    }
    // Uncompressed files are read from the offset directly.
    let skip_in_store = if fragment.codec() == CompressionCodec::None {
        offset - fragment.begin
    } else {
        0
    };
    let options = GetOptions {
        range: (skip_in_store > 0).then_some(GetRange::Offset(skip_in_store as u64)),
        ..Default::default()
    };
    let got = store
        .object_store()
        .get_opts(&path, options)
        .await
        .map_err(|e| Error::store("get", &path, e))?;
    let body = got.into_stream().map_err(io::Error::other);
    Ok(decode_stream(
        label,
        fragment.clone(),
        offset,
        skip_in_store,
        body,
    ))
}

/// Reads the whole fragment and checks its length and SHA-1.
pub async fn read_whole(store: &FragmentStore, fragment: &Fragment) -> Result<Bytes> {
    let mut reader = read_fragment(store, fragment, fragment.begin).await?;
    let mut out = Vec::with_capacity(fragment.content_length().max(0) as usize);
    while let Some(chunk) = reader.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.into())
}

/// Decodes a fragment file's bytes (from any source: the store, or a signed URL) into
/// its content from `offset`. `already_skipped` is how many content bytes the source
/// starts past `fragment.begin` (non-zero only for ranged reads of uncompressed files).
pub fn decode_stream<S>(
    label: String,
    fragment: Fragment,
    offset: i64,
    already_skipped: i64,
    body: S,
) -> FragmentReader
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let reader = SyncIoBridge::new(StreamReader::new(body));
    tokio::task::spawn_blocking(move || {
        if let Err(err) = decode_blocking(&label, &fragment, offset, already_skipped, reader, &tx) {
            let _ = tx.blocking_send(Err(err));
        }
    });
    FragmentReader { rx }
}

fn decode_blocking<R: Read + Send>(
    label: &str,
    fragment: &Fragment,
    offset: i64,
    already_skipped: i64,
    source: R,
    tx: &mpsc::Sender<Result<Bytes>>,
) -> Result<()> {
    let codec = fragment.codec();
    let corrupt = |reason: String| Error::Corrupt {
        path: label.to_owned(),
        codec: codec.as_str_name().to_owned(),
        reason,
    };
    let mut decoder = decompressor(codec, BufReader::with_capacity(CHUNK, source))?;
    let whole = already_skipped == 0 && offset == fragment.begin;
    let mut hasher = whole.then(Sha1::new);
    let mut position = fragment.begin + already_skipped;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        let chunk = &buf[..n];
        if let Some(h) = hasher.as_mut() {
            h.update(chunk);
        }
        let start = position;
        position += n as i64;
        if position > fragment.end {
            return Err(corrupt(format!(
                "decodes to more than the {} bytes its name says",
                fragment.content_length()
            )));
        }
        if position <= offset {
            continue;
        }
        let from = (offset - start).max(0) as usize;
        if tx
            .blocking_send(Ok(Bytes::copy_from_slice(&chunk[from..])))
            .is_err()
        {
            return Ok(()); // The reader went away.
        }
    }
    if position != fragment.end {
        return Err(corrupt(format!(
            "decodes to {} bytes but its name says {}",
            position - fragment.begin,
            fragment.content_length()
        )));
    }
    if let Some(h) = hasher {
        let actual = Sha1Sum::from_digest(h.finalize().into());
        if actual != fragment.sha1() {
            return Err(Error::ChecksumMismatch {
                path: label.to_owned(),
                expected: fragment.sha1().to_string(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads the raw (still compressed) bytes of a fragment file.
pub async fn read_raw(store: &FragmentStore, fragment: &Fragment) -> Result<Bytes> {
    let path = store.path(&format_fragment_path(fragment))?;
    let got = store
        .object_store()
        .get_opts(&path, GetOptions::default())
        .await
        .map_err(|e| Error::store("get", &path, e))?;
    got.bytes().await.map_err(|e| Error::store("get", &path, e))
}

/// Whether the fragment's file exists in `store`.
pub async fn exists(store: &FragmentStore, fragment: &Fragment) -> Result<bool> {
    let path = store.path(&format_fragment_path(fragment))?;
    match store
        .object_store()
        .get_opts(
            &path,
            GetOptions {
                head: true,
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::store("head", &path, e)),
    }
}
