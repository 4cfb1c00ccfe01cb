//! The broker's metrics, rendered in Prometheus' text format on the HTTP port's
//! `/metrics`.
//!
//! Events (appends, reads, uploads, lease renewals, allocator runs, gRPC calls) are
//! counted through the `metrics` facade where they happen; state (journals served, spools,
//! the memory budget, store health) is read from the broker at each scrape. No series has a
//! journal label: a broker serves up to 100,000 journals, and a series per journal would
//! make every scrape that large. Labels take only bounded values: protocol status names,
//! gRPC methods of the services this broker serves and codes, fragment store URLs (one per
//! configured store), a fixed set of sources and outcomes. Per-journal figures are on the
//! status page.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::broker::Broker;

/// Appends this broker answered itself (as primary, or with a status such as
/// `NOT_JOURNAL_PRIMARY_BROKER`; not those it proxied), by protocol `status` (or
/// `grpc_<code>` when the append ended in a gRPC error).
pub const APPENDS: &str = "folio_appends_total";
/// Content bytes of appends acknowledged with status OK.
pub const APPEND_BYTES: &str = "folio_append_bytes_total";
/// From an append's first message to its acknowledgement, for appends answered OK.
pub const APPEND_SECONDS: &str = "folio_append_duration_seconds";
/// Read RPCs this broker served from its own replica.
pub const READS: &str = "folio_reads_total";
/// Requests (appends and reads) this broker proxied to the journal's primary.
pub const PROXIED: &str = "folio_proxied_total";
/// gRPC calls, by `method` and `code`.
pub const GRPC_REQUESTS: &str = "folio_grpc_requests_total";
/// Journals this broker serves, by `role` (`primary` or `replica`).
pub const JOURNALS: &str = "folio_journals";
/// Spools holding committed content.
pub const SPOOLS_OPEN: &str = "folio_spools_open";
/// Committed bytes in open spools.
pub const SPOOL_BYTES: &str = "folio_spool_bytes";
/// The memory budget's size.
pub const BUDGET_BYTES: &str = "folio_memory_budget_bytes";
/// Bytes charged against the memory budget (spools and fragments not yet persisted).
pub const BUDGET_USED_BYTES: &str = "folio_memory_budget_used_bytes";
/// Bytes of the configured budget set aside for the connections' HTTP/2 windows.
pub const WINDOW_BYTES: &str = "folio_connection_window_reserved_bytes";
/// Client connections open, on the gRPC and HTTP ports.
pub const CONNECTIONS_OPEN: &str = "folio_connections_open";
/// 1 while a fragment store's last upload or listing by this broker succeeded, by `store`.
pub const STORE_HEALTHY: &str = "folio_store_healthy";
/// 1 for this broker, labelled with its `zone` and `suffix`.
pub const BROKER_INFO: &str = "folio_broker_info";

/// Upper bounds (seconds) of the latency histograms' buckets: 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// gRPC methods counted by name; any other path (nothing this broker serves) is `other`,
/// so a client cannot create series at will.
const METHODS: &[&str] = &[
    "/protocol.Journal/List",
    "/protocol.Journal/Apply",
    "/protocol.Journal/Read",
    "/protocol.Journal/Append",
    "/protocol.Journal/Replicate",
    "/protocol.Journal/ListFragments",
    "/protocol.Journal/FragmentStoreHealth",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// The process's Prometheus recorder, installed at the first call. Every broker in the
/// process records into it (a process normally runs one).
pub fn handle() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| format!("installing the metrics recorder: {e}"))?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    folio_journal::metrics::describe();
    folio_coordination::metrics::describe();
    describe_counter!(
        APPENDS,
        "Appends this broker answered itself (not proxied), by protocol status (grpc_<code> for gRPC errors)."
    );
    describe_counter!(
        APPEND_BYTES,
        Unit::Bytes,
        "Content bytes of appends acknowledged OK."
    );
    describe_histogram!(
        APPEND_SECONDS,
        Unit::Seconds,
        "From an append's first message to its acknowledgement (appends answered OK)."
    );
    describe_counter!(READS, "Read RPCs served from this broker's own replicas.");
    describe_counter!(
        PROXIED,
        "Appends and reads proxied to the journal's primary, by kind."
    );
    describe_counter!(GRPC_REQUESTS, "gRPC calls, by method and code.");
    describe_gauge!(JOURNALS, "Journals this broker serves, by role.");
    describe_gauge!(SPOOLS_OPEN, "Spools holding committed content.");
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Committed bytes in open spools.");
    describe_gauge!(
        BUDGET_BYTES,
        Unit::Bytes,
        "Size of the memory budget for content (the configured budget less the connections' windows)."
    );
    describe_gauge!(
        WINDOW_BYTES,
        Unit::Bytes,
        "Bytes of the configured memory budget set aside for the connections' HTTP/2 windows."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections open, on the gRPC and HTTP ports (at most --max-connections)."
    );
    describe_gauge!(
        BUDGET_USED_BYTES,
        Unit::Bytes,
        "Bytes charged against the memory budget (spools and fragments not yet persisted)."
    );
    describe_gauge!(
        STORE_HEALTHY,
        "1 while this broker's last upload or listing in the store succeeded, else 0."
    );
    describe_gauge!(BROKER_INFO, "This broker's identity, as labels.");
    // Every counter is exported from the start (at 0), so dashboards and alerts see a
    // series before its first event instead of none.
    use folio_coordination::metrics as c;
    use folio_journal::metrics as j;
    for name in [
        APPEND_BYTES,
        READS,
        j::READ_BYTES_SPOOL,
        j::READ_BYTES_STORE,
        j::READ_SIGNED_URLS,
        j::PERSIST_UPLOADS,
        j::PERSIST_BYTES,
        j::PERSIST_FAILURES,
        j::PERSIST_FOUND,
        j::LISTING_FAILURES,
        j::BUDGET_WAITS,
        c::ALLOCATOR_CHANGES,
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::counter!(APPENDS, "status" => "OK").increment(0);
    for kind in ["append", "read"] {
        metrics::counter!(PROXIED, "kind" => kind).increment(0);
    }
    for outcome in ["ok", "failed", "timeout"] {
        metrics::counter!(c::LEASE_RENEWALS, "outcome" => outcome).increment(0);
    }
    for outcome in ["converged", "wrote"] {
        metrics::counter!(c::ALLOCATOR_RUNS, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(j::PERSIST_QUEUE_FRAGMENTS).increment(0.0);
    metrics::gauge!(j::PERSIST_QUEUE_BYTES).increment(0.0);
}

/// Renders the metrics, after reading the broker's state into the gauges.
///
/// The gauges are summed straight from the replicas (no per-journal snapshot: a scrape
/// of a broker with 100,000 journals copies no names or routes).
pub fn render(handle: &PrometheusHandle, broker: &Broker) -> String {
    let id = broker.id();
    metrics::gauge!(BROKER_INFO, "zone" => id.zone.clone(), "suffix" => id.suffix.clone()).set(1.0);
    let replicas = broker.replicas_now();
    let (mut primaries, mut spooled) = (0usize, 0i64);
    // A store is healthy while no replica writing to it has an error.
    let mut stores: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    for replica in &replicas {
        primaries += usize::from(replica.is_primary());
        spooled += replica.progress().spool_bytes;
        if let Some(store) = replica.stores().first() {
            let healthy = stores.entry(store.url()).or_insert(true);
            *healthy &= replica.store_health_error().is_none();
        }
    }
    metrics::gauge!(JOURNALS, "role" => "primary").set(primaries as f64);
    metrics::gauge!(JOURNALS, "role" => "replica").set((replicas.len() - primaries) as f64);
    metrics::gauge!(SPOOL_BYTES).set(spooled as f64);
    let budget = broker.budget();
    metrics::gauge!(SPOOLS_OPEN).set(budget.open_spools() as f64);
    metrics::gauge!(BUDGET_BYTES).set(budget.total() as f64);
    metrics::gauge!(BUDGET_USED_BYTES).set(budget.used() as f64);
    metrics::gauge!(WINDOW_BYTES).set(broker.window_memory as f64);
    metrics::gauge!(CONNECTIONS_OPEN).set(broker.connections.open() as f64);
    for (store, healthy) in stores {
        metrics::gauge!(STORE_HEALTHY, "store" => store.to_owned())
            .set(f64::from(u8::from(healthy)));
    }
    handle.render()
}

/// Records an append this broker answered as primary.
pub(crate) fn append_answered(status: &'static str, bytes: i64, took: Duration) {
    metrics::counter!(APPENDS, "status" => status).increment(1);
    if status == "OK" {
        metrics::counter!(APPEND_BYTES).increment(bytes.max(0) as u64);
        metrics::histogram!(APPEND_SECONDS).record(took.as_secs_f64());
    }
}

/// The `status` label of a call that ended in gRPC error `code`.
pub(crate) fn grpc_status_label(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "grpc_Ok",
        C::Cancelled => "grpc_Cancelled",
        C::Unknown => "grpc_Unknown",
        C::InvalidArgument => "grpc_InvalidArgument",
        C::DeadlineExceeded => "grpc_DeadlineExceeded",
        C::NotFound => "grpc_NotFound",
        C::AlreadyExists => "grpc_AlreadyExists",
        C::PermissionDenied => "grpc_PermissionDenied",
        C::ResourceExhausted => "grpc_ResourceExhausted",
        C::FailedPrecondition => "grpc_FailedPrecondition",
        C::Aborted => "grpc_Aborted",
        C::OutOfRange => "grpc_OutOfRange",
        C::Unimplemented => "grpc_Unimplemented",
        C::Internal => "grpc_Internal",
        C::Unavailable => "grpc_Unavailable",
        C::DataLoss => "grpc_DataLoss",
        C::Unauthenticated => "grpc_Unauthenticated",
    }
}

/// A tower layer counting gRPC calls by method and code. The code is the response's
/// `grpc-status`, from its headers (a call refused before any message) or its trailers; a
/// response dropped before its trailers (the client went away) counts as `Cancelled`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = METHODS.iter().find(|m| **m == path).map_or("other", |m| {
            let m: &'static str = m;
            &m[1..]
        });
        CountedFuture {
            inner: self.inner.call(request),
            pending: Some(method),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetrics`].
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        // The method, until the future has answered (then the body counts the call).
        pending: Option<&'static str>,
    }

    impl<F> PinnedDrop for CountedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before answering: the client reset the stream, its deadline passed,
            // or the server was cut off at shutdown.
            if let Some(method) = this.project().pending.take() {
                count_call(method, tonic::Code::Cancelled);
            }
        }
    }
}

impl<F, R, E> std::future::Future for CountedFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>>,
{
    type Output = Result<http::Response<CountedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some(method) = this.pending.take() else {
            // Polled again after answering (a caller's mistake): counted already.
            return Poll::Ready(result.map(|r| {
                r.map(|inner| CountedBody {
                    inner,
                    pending: None,
                })
            }));
        };
        let response = match result {
            Err(err) => {
                count_call(method, tonic::Code::Unknown);
                return Poll::Ready(Err(err));
            }
            Ok(response) => response,
        };
        // A trailers-only response carries its status in the headers.
        let pending = match grpc_code(response.headers()) {
            Some(code) => {
                count_call(method, code);
                None
            }
            None => Some(method),
        };
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, pending })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call once its trailers pass.
    #[derive(Debug)]
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        // The method, until the call is counted.
        pending: Option<&'static str>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(method) = this.project().pending.take() {
                count_call(method, tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(method) = *this.pending {
            let code = match &polled {
                Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(grpc_code),
                Poll::Ready(Some(Err(_))) => Some(Some(tonic::Code::Internal)),
                // Ended without trailers: not a gRPC answer.
                Poll::Ready(None) => Some(Some(tonic::Code::Unknown)),
                Poll::Pending => None,
            };
            if let Some(code) = code {
                count_call(method, code.unwrap_or(tonic::Code::Unknown));
                *this.pending = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

fn count_call(method: &'static str, code: tonic::Code) {
    let code = &grpc_status_label(code)["grpc_".len()..];
    metrics::counter!(GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use futures::FutureExt;
    use http_body::{Body, Frame};
    use tower::{Layer, Service};

    use super::*;

    /// A response body of `frames` (data, then trailers), in order.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", code.parse().expect("header value"));
        Frame::trailers(map)
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .uri("http://broker/protocol.Journal/Append")
            .body(())
            .expect("request")
    }

    /// Runs `calls` against a fresh recorder; returns the rendered call counts.
    fn counted(calls: impl FnOnce()) -> Vec<String> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, calls);
        handle
            .render()
            .lines()
            .filter(|l| l.starts_with(GRPC_REQUESTS))
            .map(str::to_owned)
            .collect()
    }

    fn drain(body: &mut CountedBody<Frames>) {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(_)) = Pin::new(&mut *body).poll_frame(&mut cx) {}
    }

    const METHOD: &str = r#"method="protocol.Journal/Append""#;

    #[test]
    fn a_call_dropped_before_it_answers_counts_as_cancelled() {
        let lines = counted(|| {
            let mut service =
                GrpcMetricsLayer.layer(tower::service_fn(|_: http::Request<()>| {
                    futures::future::pending::<
                        Result<http::Response<Frames>, std::convert::Infallible>,
                    >()
                }));
            let mut call = service.call(request());
            assert!((&mut call).now_or_never().is_none(), "still pending");
            drop(call);
        });
        assert_eq!(
            lines,
            [format!(r#"{GRPC_REQUESTS}{{{METHOD},code="Cancelled"}} 1"#)]
        );
    }

    #[test]
    fn a_call_counts_once_with_the_code_of_its_trailers() {
        let lines = counted(|| {
            let mut service = GrpcMetricsLayer.layer(tower::service_fn(|_: http::Request<()>| {
                let body = Frames(VecDeque::from([
                    Frame::data(Bytes::from_static(b"answer")),
                    trailers("0"),
                ]));
                futures::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(body)))
            }));
            let response = service
                .call(request())
                .now_or_never()
                .expect("ready")
                .expect("a response");
            let mut body = response.into_body();
            drain(&mut body);
            drop(body);
        });
        assert_eq!(
            lines,
            [format!(r#"{GRPC_REQUESTS}{{{METHOD},code="Ok"}} 1"#)]
        );
    }

    #[test]
    fn a_trailers_only_answer_counts_from_its_headers_and_a_cut_body_as_cancelled() {
        let lines = counted(|| {
            let mut service = GrpcMetricsLayer.layer(tower::service_fn(|r: http::Request<()>| {
                let refuse = r.uri().path().ends_with("Append");
                let mut response = http::Response::new(Frames(VecDeque::from([trailers("0")])));
                if refuse {
                    response
                        .headers_mut()
                        .insert("grpc-status", "3".parse().expect("value"));
                }
                futures::future::ready(Ok::<_, std::convert::Infallible>(response))
            }));
            // Refused in its headers: counted at once, and not again when the body ends.
            let response = service.call(request()).now_or_never().expect("ready");
            let mut body = response.expect("a response").into_body();
            drain(&mut body);
            drop(body);
            // A stream the client left before its trailers.
            let read = http::Request::builder()
                .uri("http://broker/protocol.Journal/Read")
                .body(())
                .expect("request");
            let response = service.call(read).now_or_never().expect("ready");
            drop(response);
            // A path no service of the broker has.
            let other = http::Request::builder()
                .uri("http://broker/evil/aaaa")
                .body(())
                .expect("request");
            let response = service.call(other).now_or_never().expect("ready");
            drain(&mut response.expect("a response").into_body());
        });
        let mut lines = lines;
        lines.sort();
        assert_eq!(
            lines,
            [
                format!(r#"{GRPC_REQUESTS}{{method="other",code="Ok"}} 1"#),
                format!(r#"{GRPC_REQUESTS}{{{METHOD},code="InvalidArgument"}} 1"#),
                format!(r#"{GRPC_REQUESTS}{{method="protocol.Journal/Read",code="Cancelled"}} 1"#),
            ]
        );
    }
}
