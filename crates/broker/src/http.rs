//! The broker's HTTP port (`--http-listen`): Prometheus metrics at `/metrics` and the
//! broker's state as JSON at `/status`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::broker::Broker;

#[derive(Clone)]
struct Http {
    broker: Arc<Broker>,
    metrics: PrometheusHandle,
}

/// Serves the HTTP port on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/status", get(status_json))
        .with_state(Http { broker, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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

async fn status_json(State(http): State<Http>) -> Response {
    axum::Json(http.broker.state()).into_response()
}
