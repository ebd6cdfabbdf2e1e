//! `koembed serve`: an embedding server that OpenAI and text-embeddings-inference clients talk
//! to unchanged.
//!
//! request -> limits and auth -> JSON -> prompt -> tokens (blocking thread) -> batcher queue ->
//! compute thread (encoder on rayon's pool, texts of several requests per call) -> Normalize and
//! cut -> JSON. One model per server.

pub mod batcher;
pub mod error;
pub mod inputs;
pub mod metrics;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use koembed_embed::{Embedder, Prompt, DEFAULT_MAX_BATCH_TOKENS};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use batcher::Batcher;
pub use batcher::BeforeBatch;
pub use error::{ApiError, Flavor};
use metrics::Metrics;

/// How the server runs; [`ServerConfig::default`] gives the `koembed serve` defaults.
#[derive(Clone)]
pub struct ServerConfig {
    /// The name `/v1/embeddings` and `/info` report (the `--model` argument).
    pub model_name: String,
    /// Token budget of one encoder call (texts of several requests together).
    pub max_batch_tokens: usize,
    /// Embedding requests admitted at once (queued or running); one more gets 429.
    pub max_concurrent_requests: usize,
    /// Largest request body, in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Most inputs in one request; more get 413.
    pub max_inputs: usize,
    /// Whether a text longer than the model's max length is cut (true) or refused with 413
    /// (false) when the request does not say (`truncate`).
    pub auto_truncate: bool,
    /// The prompt of requests that give neither `prompt_name` nor `input_type`.
    pub default_prompt: Prompt,
    /// When set, every endpoint but `/health` wants `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Threads of the async runtime (HTTP and JSON only; the encoder has its own pool).
    pub http_threads: usize,
    /// Tests only: called on the compute thread before each encoder call.
    pub before_batch: Option<BeforeBatch>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "koembed".into(),
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_concurrent_requests: 512,
            max_body_bytes: 2 * 1024 * 1024,
            max_inputs: 2048,
            auto_truncate: false,
            default_prompt: Prompt::ModelDefault,
            api_key: None,
            http_threads: 2,
            before_batch: None,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub embedder: Arc<Embedder>,
    pub config: ServerConfig,
    pub metrics: Arc<Metrics>,
    batcher: Batcher,
    admission: Arc<Semaphore>,
    compute_alive: Arc<AtomicBool>,
    /// SHA-256 of the API key: comparing digests hides the key's length too.
    api_key_digest: Option<[u8; 32]>,
}

impl AppState {
    pub fn compute_alive(&self) -> bool {
        self.compute_alive.load(Ordering::Relaxed)
    }
}

/// Builds the router and starts the compute thread.
pub fn app(embedder: Arc<Embedder>, config: ServerConfig) -> Router {
    let metrics = Arc::new(Metrics::default());
    let (batcher, compute) = Batcher::start(
        embedder.clone(),
        config.max_batch_tokens,
        metrics.clone(),
        config.before_batch.clone(),
    );
    let compute_alive = Arc::new(AtomicBool::new(true));
    let alive = compute_alive.clone();
    std::thread::spawn(move || {
        let _ = compute.join();
        alive.store(false, Ordering::Relaxed);
    });
    let state = Arc::new(AppState {
        admission: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
        api_key_digest: config.api_key.as_deref().map(|k| Sha256::digest(k).into()),
        embedder,
        config,
        metrics,
        batcher,
        compute_alive,
    });
    Router::new()
        .route("/v1/embeddings", post(routes::openai_embeddings))
        .route("/embed", post(routes::tei_embed))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route("/v1/models", get(routes::openai_models))
        .route("/tokenize", post(routes::tei_tokenize))
        .route("/info", get(routes::info))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let message = batcher::panic_message(&*panic);
                ApiError::internal(format!("internal error ({message})"))
                    .into_response_as(Flavor::OpenAi)
            },
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint {} {path}", request.method()),
    )
    .into_response_as(Flavor::of_path(&path))
}

/// Counts every answer by endpoint and status.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let endpoint = match request.uri().path() {
        p @ ("/v1/embeddings" | "/v1/models" | "/embed" | "/tokenize" | "/info" | "/health"
        | "/metrics") => p,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        eprintln!("koembed: {endpoint}: answered {status}");
    }
    state
        .metrics
        .count_request(&endpoint, status.as_u16(), started.elapsed());
    response
}

/// With an API key, wants `Authorization: Bearer KEY` everywhere but `/health`; the key is
/// compared in constant time.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.api_key_digest else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|key| -> [u8; 32] { Sha256::digest(key.trim()).into() });
    let ok = given.is_some_and(|digest| bool::from(digest.ct_eq(expected)));
    if ok {
        next.run(request).await
    } else {
        let flavor = Flavor::of_path(request.uri().path());
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or incorrect API key: send the header 'Authorization: Bearer KEY'",
        )
        .code("invalid_api_key")
        .into_response_as(flavor);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a valid header"),
        );
        response
    }
}

/// Admits an embedding request while fewer than `max_concurrent_requests` are in flight;
/// answers 429 at once otherwise, before reading the body.
async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Ok(permit) = state.admission.clone().try_acquire_owned() else {
        let flavor = Flavor::of_path(request.uri().path());
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the server is busy: {} requests are already queued or running; retry later",
                state.config.max_concurrent_requests
            ),
        )
        .code("queue_full")
        .into_response_as(flavor);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().expect("a valid header"));
        return response;
    };
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    response
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, finishes the requests
/// in flight, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    embedder: Arc<Embedder>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(embedder, config))
        .with_graceful_shutdown(shutdown)
        .await
}

fn runtime(config: &ServerConfig) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads.max(1))
        .thread_name("koembed-http")
        .enable_all()
        .build()
}

/// Serves on `listener` until SIGTERM or SIGINT (Ctrl-C), then shuts down gracefully.
/// `on_listening` is called with the bound address once the server accepts connections.
pub fn run_until_signal(
    listener: std::net::TcpListener,
    embedder: Arc<Embedder>,
    config: ServerConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let rt = runtime(&config)?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        on_listening(listener.local_addr()?);
        serve(listener, embedder, config, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("koembed: shutting down: no new connections, finishing the requests in flight");
}

/// A server on its own thread and runtime (for tests and embedding in other programs).
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Binds `addr` (port 0: any free port) and serves in the background.
    pub fn start(
        addr: SocketAddr,
        embedder: Arc<Embedder>,
        config: ServerConfig,
    ) -> std::io::Result<RunningServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = runtime(&config)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(listener, embedder, config, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        Ok(RunningServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: waits for the requests in flight.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
