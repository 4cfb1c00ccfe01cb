//! The broker's HTTP port (`--http-listen`): the status page at `/`, the broker's state
//! as JSON at `/status`, Prometheus metrics at `/metrics`, and the HTTP gateway to
//! journals at every other path (`gateway.rs`).
//!
//! Append rates come from a sampler owned by the port: every [`SAMPLE_EVERY`] it reads
//! each replica's write head (a cheap, lock-free read) and keeps each journal's rate over
//! the last interval, and the total rate of the journals this broker is primary of for
//! the last [`HISTORY`] samples (the page's chart).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::connections::CountedListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::gateway::Gateway;
use crate::snapshot::BrokerState;

/// How often the sampler reads the write heads.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples of the total append rate kept: ten minutes.
pub const HISTORY: usize = 300;

const PAGE: &str = include_str!("status_page.html");

#[derive(Clone)]
struct Http {
    broker: Arc<Broker>,
    metrics: PrometheusHandle,
    rates: Arc<Mutex<Rates>>,
    gateway: Gateway,
}

impl axum::extract::FromRef<Http> for Gateway {
    fn from_ref(http: &Http) -> Self {
        http.gateway.clone()
    }
}

/// One point of the append rate history.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RatePoint {
    /// When it was sampled, in Unix milliseconds.
    pub unix_ms: u64,
    /// Bytes per second appended to the journals this broker is primary of, since the
    /// sample before.
    pub bytes_per_second: f64,
}

/// `/status`: the broker's state with append rates.
#[derive(Debug, Serialize)]
struct Status {
    #[serde(flatten)]
    state: BrokerState,
    /// Seconds of history the chart covers when full.
    history_seconds: u64,
    history: Vec<RatePoint>,
}

#[derive(Debug, Default)]
struct Rates {
    /// When the heads were last read.
    sampled: Option<Instant>,
    /// Each journal's write head at the last sample, its rate since the one before, and
    /// the sample that last saw it.
    journals: HashMap<String, (i64, f64, u64)>,
    /// Samples taken.
    samples: u64,
    history: VecDeque<RatePoint>,
}

impl Rates {
    /// Reads the write heads of `replicas` (every replica of the broker) now.
    fn sample(&mut self, replicas: &[folio_journal::Replica], now: Instant, unix_ms: u64) {
        let elapsed = self
            .sampled
            .map(|then| now.duration_since(then).as_secs_f64());
        self.samples += 1;
        let sample = self.samples;
        let mut total = 0.0;
        for replica in replicas {
            let head = replica.write_head();
            let rate = match self.journals.get_mut(replica.name()) {
                Some(entry) => {
                    let (last, _, _) = *entry;
                    let rate = match elapsed {
                        // A head behind its last sample is a new replica of the journal.
                        Some(dt) if dt > 0.0 && head >= last => (head - last) as f64 / dt,
                        _ => 0.0,
                    };
                    *entry = (head, rate, sample);
                    rate
                }
                None => {
                    self.journals
                        .insert(replica.name().to_owned(), (head, 0.0, sample));
                    0.0
                }
            };
            if replica.is_primary() {
                total += rate;
            }
        }
        self.journals.retain(|_, (_, _, seen)| *seen == sample);
        if elapsed.is_some() {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(RatePoint {
                unix_ms,
                bytes_per_second: total,
            });
        }
        self.sampled = Some(now);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serves the HTTP port on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    metrics: PrometheusHandle,
    gateway: Gateway,
    tls: Option<Arc<rustls::ServerConfig>>,
    slots: Arc<crate::connections::Slots>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let rates = Arc::new(Mutex::new(Rates::default()));
    let sampler = tokio::spawn(
        sample_rates(
            broker.clone(),
            metrics.clone(),
            rates.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("status_sampler")),
    );
    let app = axum::Router::new()
        .route("/", get(status_page))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_page))
        // Every other path is a journal (one named `status` or `metrics` is reached over
        // gRPC only).
        .route(
            "/{*journal}",
            get(crate::gateway::read)
                .head(crate::gateway::read)
                .put(crate::gateway::append),
        )
        .with_state(Http {
            broker,
            metrics,
            rates,
            gateway,
        });
    let stopped = shutdown.clone();
    let stopping = async move { stopped.cancelled().await };
    let served = match tls {
        Some(config) => {
            let listener = crate::http_tls::TlsListener::new(listener, config)?;
            axum::serve(CountedListener::new(listener, slots), app)
                .with_graceful_shutdown(stopping)
                .await
        }
        None => {
            axum::serve(CountedListener::new(listener, slots), app)
                .with_graceful_shutdown(stopping)
                .await
        }
    };
    shutdown.cancel();
    let _ = sampler.await;
    served
}

async fn sample_rates(
    broker: Arc<Broker>,
    metrics: PrometheusHandle,
    rates: Arc<Mutex<Rates>>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        // Folds the histograms' samples into their buckets, which the exporter otherwise
        // does only when rendering: an unscraped broker keeps no backlog.
        metrics.run_upkeep();
        let replicas = broker.replicas_now();
        let mut rates = rates.lock().unwrap_or_else(PoisonError::into_inner);
        rates.sample(&replicas, Instant::now(), unix_ms());
    }
}

async fn status_page() -> Html<&'static str> {
    Html(PAGE)
}

/// `/status`: with authorization on, it needs a token with `LIST` (in an
/// `Authorization: Bearer` header, or `?token=` for the status page, which passes its own
/// query on), and shows only the journals the token's selector covers.
async fn status_json(
    State(http): State<Http>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let from_query = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| format!("Bearer {v}"))
    });
    let from_header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let claims = match http.broker.auth.verify_header(
        from_header.or(from_query).as_deref(),
        folio_protocol::auth::Capability::LIST,
    ) {
        Ok(claims) => claims,
        Err(status) => return crate::gateway::grpc_error(&status),
    };
    let mut state = http.broker.state();
    if !claims.selector.is_empty() {
        state
            .journals
            .retain(|j| claims.covers(&j.name, http.broker.spec_labels(&j.name).as_ref()));
    }
    let history = {
        let rates = http.rates.lock().unwrap_or_else(PoisonError::into_inner);
        for journal in &mut state.journals {
            if let Some((_, rate, _)) = rates.journals.get(&journal.name) {
                journal.append_rate = *rate;
            }
        }
        rates.history.iter().copied().collect()
    };
    let status = Status {
        state,
        history_seconds: SAMPLE_EVERY.as_secs() * HISTORY as u64,
        history,
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(status)).into_response()
}

async fn metrics_page(State(http): State<Http>) -> Response {
    let text = crate::metrics::render(&http.metrics, &http.broker);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
