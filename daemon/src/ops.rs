//! The ops HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (the daemon accepts sessions; 503 while starting or shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 50 µs .. 5 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Batch size buckets.
const SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Installs the process-wide metrics recorder (once; later calls reuse it).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("legalchat_write_batch_w".into()), &SIZE_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("legalchat_write_batch_m".into()), &SIZE_BUCKETS));
            match builder.map(|b| b.build_recorder()) {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder is installed (embedding); then our
                    // handle renders an empty page rather than taking the process down.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
}

/// Binds the ops listener; returns its address and the server future.
pub async fn bind(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { metrics, ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serve = async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "ops listener stopped");
        }
    };
    Ok((local, serve))
}

async fn render(State(s): State<OpsState>) -> String {
    s.metrics.render()
}

async fn readyz(State(s): State<OpsState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Acquire) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}
