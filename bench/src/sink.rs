//! The gRPC ceiling: `folio-bench grpc-sink-server`, a Journal service that does nothing
//! a broker does except speak the same protocol over the same tonic stack.
//!
//! - `Append` reads the client stream and answers a commit at a per-journal offset
//!   counter: a no-op sink for the same messages the broker receives.
//! - `Read` (blocking) relays appends committed after it started, straight from memory:
//!   the ceiling for a tail reader's latency.
//! - `Apply` and `List` answer OK, so the bench drives it with the broker's code.
//!
//! It runs as its own process, like the broker, so client and server never share a
//! runtime. It uses the broker's HTTP/2 windows (8 MiB stream, 16 MiB connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::journal_server::{Journal, JournalServer};
use folio_protocol::{
    AppendRequest, AppendResponse, ApplyRequest, ApplyResponse, Fragment,
    FragmentStoreHealthRequest, FragmentStoreHealthResponse, FragmentsRequest, FragmentsResponse,
    ListRequest, ListResponse, ReadRequest, ReadResponse, ReplicateRequest, ReplicateResponse,
    Status,
};
use futures::Stream;
use tokio::sync::broadcast;
use tonic::transport::Channel;
use tonic::{Request, Response, Streaming};

use super::process::{ServerProcess, free_port};
use super::rpc::{CONNECTION_WINDOW, FRAME_SIZE, MAX_MESSAGE, STREAM_WINDOW};

/// Flags of the hidden `folio-bench grpc-sink-server`.
#[derive(Debug, Args)]
pub struct SinkServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Relay every append to these sinks (comma-separated endpoints): each message is
    /// forwarded as it arrives, and the append is answered once every one of them answered.
    /// The bound on replication over the same gRPC stack: a primary that does nothing else.
    #[arg(long, value_delimiter = ',')]
    pub relay_to: Vec<String>,
}

/// Serves the sink until SIGINT or SIGTERM.
pub async fn serve(args: SinkServerArgs) -> Result<()> {
    let mut downstream = Vec::new();
    for endpoint in &args.relay_to {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .with_context(|| format!("--relay-to: {endpoint:?} is not a URL"))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .connect_lazy();
        downstream.push(
            JournalClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        );
    }
    let sink = Sink {
        downstream,
        ..Sink::default()
    };
    let service = JournalServer::new(sink)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    eprintln!("grpc sink: serving on {}", args.listen);
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(Some(FRAME_SIZE))
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_shutdown(args.listen, shutdown_signal())
        .await
        .with_context(|| format!("serving on {}", args.listen))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Relay messages a reader may fall behind by before its read fails.
const RELAY_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Sink {
    journals: Mutex<HashMap<String, Arc<SinkJournal>>>,
    /// Sinks every append is relayed to (none: a plain sink).
    downstream: Vec<JournalClient<Channel>>,
}

#[derive(Debug)]
struct SinkJournal {
    /// The write head; held while a commit is relayed, so relayed offsets are in order.
    head: Mutex<i64>,
    relay: broadcast::Sender<(i64, Bytes)>,
}

impl Sink {
    fn journal(&self, name: &str) -> Arc<SinkJournal> {
        let mut journals = self
            .journals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        journals
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(SinkJournal {
                    head: Mutex::new(0),
                    relay: broadcast::channel(RELAY_CAPACITY).0,
                })
            })
            .clone()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Journal for Sink {
    type ListStream = BoxStream<ListResponse>;
    type ReadStream = BoxStream<ReadResponse>;
    type ReplicateStream = BoxStream<ReplicateResponse>;

    async fn list(
        &self,
        _request: Request<ListRequest>,
    ) -> Result<Response<Self::ListStream>, tonic::Status> {
        let response = ListResponse {
            status: Status::Ok as i32,
            ..ListResponse::default()
        };
        Ok(Response::new(Box::pin(futures::stream::once(async move {
            Ok(response)
        }))))
    }

    async fn apply(
        &self,
        _request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, tonic::Status> {
        Ok(Response::new(ApplyResponse {
            status: Status::Ok as i32,
            header: None,
        }))
    }

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, tonic::Status> {
        let request = request.into_inner();
        let journal = self.journal(&request.journal);
        // Subscribed before answering: a client whose read call returned sees every
        // append committed after that.
        let (receiver, head) = {
            let head = journal
                .head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (journal.relay.subscribe(), *head)
        };
        if !request.block {
            let response = ReadResponse {
                status: Status::OffsetNotYetAvailable as i32,
                offset: head,
                write_head: head,
                ..ReadResponse::default()
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async move {
                Ok(response)
            }))));
        }
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok((offset, content)) => Some((
                    Ok(ReadResponse {
                        status: Status::Ok as i32,
                        offset,
                        content,
                        ..ReadResponse::default()
                    }),
                    receiver,
                )),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((
                    Err(tonic::Status::resource_exhausted(format!(
                        "reader fell {n} messages behind the relay"
                    ))),
                    receiver,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<AppendResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::invalid_argument("empty append stream"))?;
        if !self.downstream.is_empty() {
            return self.relay(first, stream).await;
        }
        let journal = self.journal(&first.journal);
        // Content is kept only while someone reads; otherwise this is a pure sink.
        let relaying = journal.relay.receiver_count() > 0;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut length = first.content.len() as i64;
        if relaying && !first.content.is_empty() {
            chunks.push(first.content);
        }
        let mut committed = false;
        while let Some(message) = stream.message().await? {
            if message.content.is_empty() {
                committed = true;
                break;
            }
            length += message.content.len() as i64;
            if relaying {
                chunks.push(message.content);
            }
        }
        if !committed {
            return Err(tonic::Status::aborted(
                "the append stream ended without its commit chunk",
            ));
        }
        let begin = {
            let mut head = journal
                .head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let begin = *head;
            *head += length;
            let mut offset = begin;
            for chunk in chunks {
                let len = chunk.len() as i64;
                // No receivers left is fine: nobody is reading.
                let _ = journal.relay.send((offset, chunk));
                offset += len;
            }
            begin
        };
        Ok(Response::new(AppendResponse {
            status: Status::Ok as i32,
            commit: Some(Fragment {
                journal: first.journal,
                begin,
                end: begin + length,
                ..Fragment::default()
            }),
            ..AppendResponse::default()
        }))
    }

    async fn replicate(
        &self,
        _request: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("the sink does not replicate"))
    }

    async fn list_fragments(
        &self,
        _request: Request<FragmentsRequest>,
    ) -> Result<Response<FragmentsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the sink keeps no fragments"))
    }

    async fn fragment_store_health(
        &self,
        _request: Request<FragmentStoreHealthRequest>,
    ) -> Result<Response<FragmentStoreHealthResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the sink has no store"))
    }
}

impl Sink {
    /// Relays one append to every downstream sink, message by message as they arrive, and
    /// answers with the first one's commit once all of them answered OK.
    async fn relay(
        &self,
        first: AppendRequest,
        mut stream: Streaming<AppendRequest>,
    ) -> Result<Response<AppendResponse>, tonic::Status> {
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for client in &self.downstream {
            let (tx, rx) = tokio::sync::mpsc::channel(RELAY_QUEUE);
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                client
                    .append(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            }));
            senders.push(tx);
        }
        let forward = |request: AppendRequest| {
            let senders = &senders;
            async move {
                for tx in senders {
                    tx.send(request.clone())
                        .await
                        .map_err(|_| tonic::Status::unavailable("a relayed append ended early"))?;
                }
                Ok::<_, tonic::Status>(())
            }
        };
        forward(first).await?;
        let mut committed = false;
        while let Some(request) = stream.message().await? {
            // The client's commit: an empty content message after the first.
            committed = request.content.is_empty();
            forward(request).await?;
            if committed {
                break;
            }
        }
        if !committed {
            return Err(tonic::Status::aborted(
                "the append stream ended without its commit chunk",
            ));
        }
        drop(senders);
        let mut answer = None;
        for call in calls {
            let response = call
                .await
                .map_err(|e| tonic::Status::internal(format!("relay task: {e}")))??
                .into_inner();
            if response.status() != Status::Ok {
                return Ok(Response::new(response));
            }
            answer.get_or_insert(response);
        }
        Ok(Response::new(answer.unwrap_or_default()))
    }
}

/// Messages queued to each downstream sink of a relay.
const RELAY_QUEUE: usize = 64;

/// A `folio-bench grpc-sink-server` process the bench started.
#[derive(Debug)]
pub struct SinkProcess {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl SinkProcess {
    /// Starts the sink (this executable) on a free port and waits for it to listen.
    pub async fn start() -> Result<Self> {
        Self::start_relaying(&[]).await
    }

    /// Starts a sink that relays every append to the sinks at `downstream` (see
    /// [`SinkServerArgs::relay_to`]); a plain sink when it is empty.
    pub async fn start_relaying(downstream: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("folio-bench-sink.")
            .tempdir()
            .context("creating a directory for the sink's log")?;
        let port = free_port()?;
        let exe = std::env::current_exe().context("locating the folio-bench executable")?;
        let mut command = Command::new(exe);
        command
            .args(["grpc-sink-server", "--listen"])
            .arg(format!("127.0.0.1:{port}"));
        if !downstream.is_empty() {
            command.arg("--relay-to").arg(downstream.join(","));
        }
        let log = dir.path().join("sink.log");
        let mut process = ServerProcess::spawn("the gRPC sink", command, &log, "")?;
        process.wait_for_port(port, Duration::from_secs(30)).await?;
        eprintln!(
            "bench: started the gRPC sink (pid {}) on 127.0.0.1:{port}",
            process.pid().unwrap_or_default()
        );
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            process,
            _dir: dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.process.stop(Duration::from_secs(2)).await;
    }
}
