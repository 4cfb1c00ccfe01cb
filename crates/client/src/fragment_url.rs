//! Following a read response's `fragment_url`: fetching a persisted fragment straight
//! from the bucket (a signed `https://` URL) or the local disk (a `file://` URL), and
//! decoding it from the reader's offset with the fragment store's decoder, which checks
//! that the file holds exactly the span (and, read whole, the SHA-1) its name says.

use std::io::{self, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use folio_fragment_store::read::{FragmentReader, decode_stream};
use folio_protocol::{CompressionCodec, Fragment};
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_RANGE, RANGE};
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;
use url::Url;

use crate::{Error, Result};

/// A fragment being read from its URL.
#[derive(Debug)]
pub(crate) struct FragmentFetch {
    /// The fragment, as the broker described it.
    pub(crate) fragment: Fragment,
    /// Decoded content from the reader's offset.
    reader: FragmentReader,
    /// The URL without its query, for errors and logs.
    label: String,
    /// Set when the body itself failed (connection reset mid-GET): the decoder then
    /// reports a truncated file, which is a transport failure, not corruption.
    body_error: Arc<Mutex<Option<String>>>,
}

impl FragmentFetch {
    /// The next decoded chunk; `None` once the fragment's end was reached (the decoder
    /// has then checked the file's length).
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes>> {
        let item = self.reader.next().await?;
        Some(item.map_err(|err| {
            let body_error = self
                .body_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match body_error {
                Some(reason) => Error::Fetch {
                    url: self.label.clone(),
                    reason,
                    retryable: true,
                },
                None => Error::Store(err),
            }
        }))
    }
}

/// Opens `url`, the file of `fragment`, to read its content from `offset`
/// (`fragment.begin <= offset < fragment.end`).
pub(crate) async fn open(
    http: &reqwest::Client,
    url: &str,
    fragment: &Fragment,
    offset: i64,
) -> Result<FragmentFetch> {
    let parsed = Url::parse(url).map_err(|e| Error::Fetch {
        url: strip_query(url),
        reason: format!("not a URL: {e}"),
        retryable: false,
    })?;
    let label = strip_query(url);
    // Uncompressed files can start reading at the offset; compressed ones are decoded
    // from their start and the decoder skips.
    let skip = if fragment.codec() == CompressionCodec::None {
        offset - fragment.begin
    } else {
        0
    };
    let body_error = Arc::new(Mutex::new(None));
    let (body, already_skipped, codec) = match parsed.scheme() {
        "file" => open_file(&parsed, &label, skip, fragment.codec()).await?,
        "http" | "https" => open_http(http, parsed, &label, skip, fragment, &body_error).await?,
        other => {
            return Err(Error::Fetch {
                url: label,
                reason: format!("unsupported URL scheme {other:?} (expected https, http or file)"),
                retryable: false,
            });
        }
    };
    let decode_as = Fragment {
        compression_codec: codec as i32,
        ..fragment.clone()
    };
    let reader = decode_stream(label.clone(), decode_as, offset, already_skipped, body);
    Ok(FragmentFetch {
        fragment: fragment.clone(),
        reader,
        label,
        body_error,
    })
}

type Body = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

async fn open_file(
    url: &Url,
    label: &str,
    skip: i64,
    codec: CompressionCodec,
) -> Result<(Body, i64, CompressionCodec)> {
    let failed = |reason: String, retryable: bool| Error::Fetch {
        url: label.to_owned(),
        reason,
        retryable,
    };
    let path = url
        .to_file_path()
        .map_err(|()| failed("not a local file path".into(), false))?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        // A missing file was removed since the broker listed it (merged into a larger
        // file by compaction, or pruned): the broker hands out what holds the offset now.
        failed(format!("opening {}: {e}", path.display()), true)
    })?;
    if skip > 0 {
        file.seek(SeekFrom::Start(skip as u64))
            .await
            .map_err(|e| failed(format!("seeking {}: {e}", path.display()), true))?;
    }
    Ok((Box::pin(ReaderStream::new(file)), skip, codec))
}

async fn open_http(
    http: &reqwest::Client,
    url: Url,
    label: &str,
    skip: i64,
    fragment: &Fragment,
    body_error: &Arc<Mutex<Option<String>>>,
) -> Result<(Body, i64, CompressionCodec)> {
    let codec = fragment.codec();
    let mut request = http.get(url);
    if skip > 0 {
        request = request.header(RANGE, format!("bytes={skip}-"));
    }
    if codec == CompressionCodec::GzipOffloadDecompression {
        // Stored with `Content-Encoding: gzip`: ask for the stored bytes, so stores that
        // transcode (GCS) do not decompress for us only sometimes.
        request = request.header(ACCEPT_ENCODING, "gzip");
    }
    let response = request.send().await.map_err(|e| Error::Fetch {
        url: label.to_owned(),
        reason: e.to_string(),
        retryable: true,
    })?;
    let status = response.status();
    let already_skipped = match status {
        StatusCode::PARTIAL_CONTENT => {
            content_range_start(&response).ok_or_else(|| Error::Fetch {
                url: label.to_owned(),
                reason: "206 Partial Content without a usable Content-Range".into(),
                retryable: false,
            })?
        }
        // A server that ignores Range sends the whole file; the decoder skips.
        s if s.is_success() => 0,
        s => {
            return Err(Error::Fetch {
                url: label.to_owned(),
                reason: format!("HTTP {s}"),
                retryable: retryable_http_status(s),
            });
        }
    };
    if already_skipped < 0 || already_skipped > skip {
        // Content past the reader's offset would be handed out at the wrong offsets.
        return Err(Error::Fetch {
            url: label.to_owned(),
            reason: format!(
                "asked for bytes from {skip} but the server sent from {already_skipped}"
            ),
            retryable: false,
        });
    }
    let codec = if codec == CompressionCodec::GzipOffloadDecompression
        && !response
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("gzip"))
    {
        // The server decompressed it after all: the body is the plain content.
        CompressionCodec::None
    } else {
        codec
    };
    let body_error = body_error.clone();
    let body = response.bytes_stream().map_err(move |e| {
        *body_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
        io::Error::other(e)
    });
    Ok((Box::pin(body), already_skipped, codec))
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(response: &reqwest::Response) -> Option<i64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    parse_content_range_start(value)
}

fn parse_content_range_start(value: &str) -> Option<i64> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// Statuses after which asking the broker again, for a fresh signed URL, may succeed:
/// server errors, throttling, timeouts, 403, which is what an expired signature gets, and
/// 404, which a file removed since the broker listed it gets (compaction merged it into a
/// larger file, or retention pruned it): the broker then hands out what holds the offset.
fn retryable_http_status(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        )
}

/// `url` without its query and fragment, which hold signatures.
pub(crate) fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_not_logged() {
        assert_eq!(
            strip_query("https://b.s3.amazonaws.com/j/0-1-ab.gz?X-Amz-Signature=secret"),
            "https://b.s3.amazonaws.com/j/0-1-ab.gz"
        );
        assert_eq!(strip_query("file:///tmp/x"), "file:///tmp/x");
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(parse_content_range_start("bytes */200"), None);
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn http_retry_classification() {
        for s in [500, 502, 503, 403, 404, 408, 429] {
            let s = StatusCode::from_u16(s).expect("status");
            assert!(retryable_http_status(s), "{s}");
        }
        for s in [400, 401, 410, 416] {
            let s = StatusCode::from_u16(s).expect("status");
            assert!(!retryable_http_status(s), "{s}");
        }
    }
}
