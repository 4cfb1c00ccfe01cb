//! A scripted stand-in for a broker: a tonic server of `protocol.Journal` on
//! 127.0.0.1:0 whose `Read`, `Append` and `ListFragments` answers the test decides, and
//! which records every request it got.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use folio_client::Client;
use folio_protocol::journal_server::{Journal, JournalServer};
use folio_protocol::{
    AppendRequest, AppendResponse, ApplyRequest, ApplyResponse, FragmentStoreHealthRequest,
    FragmentStoreHealthResponse, FragmentsRequest, FragmentsResponse, ListRequest, ListResponse,
    ReadRequest, ReadResponse, ReplicateRequest, ReplicateResponse, Status as JournalStatus,
};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// Answers to one `Read` call: the responses to stream, then the stream ends.
pub type ReadScript = Box<dyn Fn(&ReadRequest) -> Vec<Result<ReadResponse, Status>> + Send + Sync>;

/// Answers to one `ListFragments` call.
pub type FragmentsScript = Box<dyn Fn(&FragmentsRequest) -> FragmentsResponse + Send + Sync>;

/// How the fake answers one `Append` attempt.
#[derive(Debug, Clone)]
pub enum AppendAnswer {
    /// Read the content to its commit chunk, append it, answer OK with the commit.
    Commit,
    /// Answer this journal status right after the parameters, appending nothing.
    Status(JournalStatus),
    /// Fail the RPC right after the parameters, appending nothing.
    RpcError(Status),
    /// Commit the append, then fail the RPC as if the answer were lost.
    LoseAnswer(Status),
}

/// The fake broker's state.
#[derive(Default)]
pub struct FakeBroker {
    read_script: Option<ReadScript>,
    fragments_script: Option<FragmentsScript>,
    append_answers: Mutex<VecDeque<AppendAnswer>>,
    /// Every `ReadRequest`, in order.
    pub reads: Mutex<Vec<ReadRequest>>,
    /// Every `FragmentsRequest`, in order.
    pub fragment_listings: Mutex<Vec<FragmentsRequest>>,
    /// The messages of every `Append` attempt, in order.
    pub appends: Mutex<Vec<Vec<AppendRequest>>>,
    /// Committed content.
    pub journal: Mutex<Vec<u8>>,
}

impl FakeBroker {
    /// A broker that answers reads with `script`.
    pub fn reading(
        script: impl Fn(&ReadRequest) -> Vec<Result<ReadResponse, Status>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            read_script: Some(Box::new(script)),
            ..Self::default()
        }
    }

    /// A broker that answers append attempts with `answers` in turn, then commits.
    pub fn appending(answers: impl IntoIterator<Item = AppendAnswer>) -> Self {
        Self {
            append_answers: Mutex::new(answers.into_iter().collect()),
            ..Self::default()
        }
    }

    /// A broker that answers fragment listings with `script`.
    pub fn listing(
        script: impl Fn(&FragmentsRequest) -> FragmentsResponse + Send + Sync + 'static,
    ) -> Self {
        Self {
            fragments_script: Some(Box::new(script)),
            ..Self::default()
        }
    }

    /// The offsets of the reads received.
    pub fn read_offsets(&self) -> Vec<i64> {
        self.reads
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.offset)
            .collect()
    }

    /// The committed content.
    pub fn content(&self) -> Vec<u8> {
        self.journal.lock().expect("lock").clone()
    }

    /// The append attempts received.
    pub fn attempts(&self) -> Vec<Vec<AppendRequest>> {
        self.appends.lock().expect("lock").clone()
    }
}

/// Serves `broker` on 127.0.0.1:0 until the test's runtime ends, and returns a client.
pub async fn serve(broker: FakeBroker) -> (Arc<FakeBroker>, Client, SocketAddr) {
    let broker = Arc::new(broker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| stream);
        Some((conn, listener))
    });
    let service = JournalServer::from_arc(broker.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .expect("fake broker serves");
    });
    let client = folio_client::connect_lazy(&format!("http://{addr}")).expect("client");
    (broker, client, addr)
}

#[tonic::async_trait]
impl Journal for FakeBroker {
    type ListStream = BoxStream<'static, Result<ListResponse, Status>>;
    type ReadStream = BoxStream<'static, Result<ReadResponse, Status>>;
    type ReplicateStream = BoxStream<'static, Result<ReplicateResponse, Status>>;

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("list"))
    }

    async fn apply(&self, _: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        Err(Status::unimplemented("apply"))
    }

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        self.reads.lock().expect("lock").push(request.clone());
        let script = self
            .read_script
            .as_ref()
            .ok_or_else(|| Status::unimplemented("read"))?;
        let responses = script(&request);
        Ok(Response::new(Box::pin(futures::stream::iter(responses))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<AppendResponse>, Status> {
        let mut stream = request.into_inner();
        let params = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no parameters"))?;
        let answer = self
            .append_answers
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(AppendAnswer::Commit);
        let mut messages = vec![params.clone()];
        let record =
            |messages: Vec<AppendRequest>| self.appends.lock().expect("lock").push(messages);
        match answer {
            AppendAnswer::Status(status) => {
                record(messages);
                return Ok(Response::new(AppendResponse {
                    status: status as i32,
                    ..AppendResponse::default()
                }));
            }
            AppendAnswer::RpcError(status) => {
                record(messages);
                return Err(status);
            }
            AppendAnswer::Commit | AppendAnswer::LoseAnswer(_) => {}
        }
        let mut content = Vec::new();
        let mut committed = false;
        // The stream ending (or resetting) before the commit chunk rolls back.
        while let Ok(Some(message)) = stream.message().await {
            let commit = message.content.is_empty();
            content.extend_from_slice(&message.content);
            messages.push(message);
            if commit {
                committed = true;
                break;
            }
        }
        record(messages);
        if !committed {
            return Err(Status::aborted(
                "append rolled back: stream ended before its commit chunk",
            ));
        }
        let (begin, end) = {
            let mut journal = self.journal.lock().expect("lock");
            let begin = journal.len() as i64;
            if params.offset != 0 && params.offset != begin {
                return Ok(Response::new(AppendResponse {
                    status: JournalStatus::WrongAppendOffset as i32,
                    ..AppendResponse::default()
                }));
            }
            journal.extend_from_slice(&content);
            (begin, journal.len() as i64)
        };
        if let AppendAnswer::LoseAnswer(status) = answer {
            return Err(status);
        }
        Ok(Response::new(AppendResponse {
            status: JournalStatus::Ok as i32,
            commit: Some(folio_protocol::Fragment {
                journal: params.journal,
                begin,
                end,
                ..Default::default()
            }),
            registers: params.union_registers,
            ..AppendResponse::default()
        }))
    }

    async fn replicate(
        &self,
        _: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        Err(Status::unimplemented("replicate"))
    }

    async fn list_fragments(
        &self,
        request: Request<FragmentsRequest>,
    ) -> Result<Response<FragmentsResponse>, Status> {
        let request = request.into_inner();
        self.fragment_listings
            .lock()
            .expect("lock")
            .push(request.clone());
        let script = self
            .fragments_script
            .as_ref()
            .ok_or_else(|| Status::unimplemented("list_fragments"))?;
        Ok(Response::new(script(&request)))
    }

    async fn fragment_store_health(
        &self,
        _: Request<FragmentStoreHealthRequest>,
    ) -> Result<Response<FragmentStoreHealthResponse>, Status> {
        Err(Status::unimplemented("fragment_store_health"))
    }
}
