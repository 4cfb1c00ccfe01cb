//! The gRPC side of the bench client: connections with the flow-control windows
//! BASELINES.md measured as necessary, and one append as one client-streaming RPC.
//!
//! The broker and the gRPC sink baseline are driven by exactly this code, so the only
//! difference between their numbers is the server.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{AppendRequest, Fragment, Status};
use tonic::transport::Endpoint;

/// A Journal-service client on one HTTP/2 connection (the client crate's type).
pub type Client = folio_client::Client;

/// HTTP/2 stream window: small-message streams stall near 1.6 GB/s with the defaults.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 connection window.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame the gRPC sink accepts: the broker's default
/// (`--http2-max-frame-size`), so both receive an append in the same frames.
pub const FRAME_SIZE: u32 = 256 << 10;
/// Largest content chunk of one `AppendRequest` (the client crate's `MAX_CHUNK`).
pub const MAX_CHUNK: usize = folio_client::append::MAX_CHUNK;
/// Largest gRPC message the bench sends or accepts.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Opens one HTTP/2 connection to `endpoint` (`http://host:port`), with 8 MiB stream and
/// 16 MiB connection windows and TCP_NODELAY.
pub async fn connect(endpoint: &str) -> Result<Client> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{endpoint:?} is not an endpoint URL"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    // A broker started with --auth-keys (through --broker-arg) needs a token: the bench
    // sends FOLIO_AUTH_TOKEN's, if set (the sinks ignore it).
    let token = std::env::var("FOLIO_AUTH_TOKEN").ok();
    let bearer = folio_client::Bearer::new(token.as_deref())
        .map_err(|e| anyhow::anyhow!("FOLIO_AUTH_TOKEN: {e}"))?;
    Ok(JournalClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// The messages of one append of `content` to `journal`: parameters, content in chunks
/// of at most [`MAX_CHUNK`], and the empty chunk that commits.
pub fn append_messages(journal: &str, content: &Bytes) -> Vec<AppendRequest> {
    let mut messages = Vec::with_capacity(2 + content.len() / MAX_CHUNK + 1);
    messages.push(AppendRequest {
        journal: journal.to_owned(),
        ..AppendRequest::default()
    });
    let mut at = 0;
    while at < content.len() {
        let end = (at + MAX_CHUNK).min(content.len());
        messages.push(AppendRequest {
            content: content.slice(at..end),
            ..AppendRequest::default()
        });
        at = end;
    }
    messages.push(AppendRequest::default());
    messages
}

/// Appends `content` to `journal` as one RPC and checks that it committed exactly
/// `content`; returns the commit's span.
pub async fn append(client: &Client, journal: &str, content: &Bytes) -> Result<Fragment> {
    let messages = append_messages(journal, content);
    let response = client
        .clone()
        .append(futures::stream::iter(messages))
        .await
        .with_context(|| format!("append RPC to {journal}"))?
        .into_inner();
    if response.status != Status::Ok as i32 {
        bail!(
            "append to {journal} answered {} {}",
            status_name(response.status),
            response.store_health_error
        );
    }
    let commit = response
        .commit
        .with_context(|| format!("append to {journal} answered OK without a commit"))?;
    ensure!(
        commit.end - commit.begin == content.len() as i64,
        "append to {journal} committed [{}, {}), not the {} bytes sent",
        commit.begin,
        commit.end,
        content.len()
    );
    Ok(commit)
}

/// The name of a protocol status number, e.g. `JOURNAL_NOT_FOUND`.
pub fn status_name(status: i32) -> String {
    Status::try_from(status).map_or_else(
        |_| format!("status {status}"),
        |s| s.as_str_name().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_params_chunks_and_a_commit() {
        let small = append_messages("a/b", &Bytes::from(vec![1u8; 100]));
        assert_eq!(small.len(), 3);
        assert_eq!(small[0].journal, "a/b");
        assert_eq!(small[1].content.len(), 100);
        assert!(small[2].content.is_empty() && small[2].journal.is_empty());
        let big = append_messages("a/b", &Bytes::from(vec![1u8; 2 * MAX_CHUNK + 1]));
        assert_eq!(big.len(), 5);
        assert_eq!(big[3].content.len(), 1);
    }
}
