//! `fhec serve`: an HTTP service that classifies encrypted images, and its client.
//!
//! ```text
//!   client (RemoteClient, `fhec remote`)           server (`fhec serve MODEL.fhec`)
//!   GET  /v1/models/{name}/client  ◀── client part (no weights)
//!   keys generated locally; the secret key stays here
//!   POST /v1/models/{name}/keys    ──▶ evaluation key: checked against the model's
//!                                      parameters, then stored (a blob of the store)
//!   POST /v1/models/{name}/jobs    ──▶ encrypted image: 202 {"job": ID}, queued in the store
//!   GET  /v1/jobs/{id}             ◀── {"state", "progress", "total", "error"}
//!   GET  /v1/jobs/{id}/result      ◀── encrypted result; decrypted locally
//! ```
//!
//! * [`store`]: tokens, keys and jobs in SQLite (a data directory, blobs as files beside
//!   it) or PostgreSQL (blobs in it, shared by every process given the URL); a blob and the
//!   row that makes it usable are stored so that an interrupted upload leaves nothing
//!   usable, and a running job is held under a lease, so a dead process's job is taken over.
//! * [`api`]: the axum router (bearer-token auth; a client sees only its own keys and jobs;
//!   errors are JSON `{"error": "..."}` with a 4xx status, never a panic).
//! * [`worker`]: the workers that claim the oldest queued job (preferring the keys loaded
//!   here), classify it on a blocking thread with the key's
//!   [`Server`](fhec_runtime::app::Server), renew its lease and record progress.
//! * [`cache`]: the loaded evaluation keys, least recently used first out, within a memory
//!   budget: a key is expanded once, not per job.
//! * [`client`]: [`RemoteClient`], the blocking client for applications and `fhec remote`.
//! * [`limit`]: the per-token rate limits (a token bucket per caller; 429 with `Retry-After`).
//! * [`metrics`]: the latency histograms of `/metrics` (jobs, classifications, requests).
//!
//! No secret key ever reaches the server: a key upload holding a client key is refused by
//! its file format before anything is stored.
#![warn(missing_docs)]

pub mod api;
pub mod cache;
pub mod client;
pub mod limit;
pub mod metrics;
pub mod models;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

pub use client::{JobStatus, ModelInfo, RemoteClient, RemoteError};
pub use models::{Model, ModelError};
pub use store::{Location, Store, StoreError};

/// How a service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Where the job queue, the key records and the blobs live: a data directory (SQLite and
    /// files, created if missing) or a PostgreSQL database shared by several processes.
    pub store: Location,
    /// Jobs classified at once (each one uses every core).
    pub workers: usize,
    /// Queued jobs at most; a submission beyond is refused with 429.
    pub max_queue: usize,
    /// Largest evaluation key upload, in bytes (413 beyond).
    pub max_key_bytes: usize,
    /// Memory budget of the expanded evaluation keys kept loaded, in bytes (at least one key
    /// stays loaded whatever its size).
    pub key_memory: usize,
    /// A running job whose worker has not renewed its lease for this long (its process was
    /// killed, its machine lost) is taken by another worker.
    pub lease: Duration,
    /// Finished jobs (done or failed) are deleted with their results this long after they
    /// finished; `None` keeps them until their client deletes them.
    pub retention: Option<Duration>,
    /// Workers prefer the jobs whose key this process has loaded, unless a job has waited
    /// longer than this (zero: oldest first, whatever the key).
    pub key_affinity: Duration,
    /// Requests a minute each token may make, sustained (0: unlimited); beyond its bucket a
    /// request is refused with 429 and `Retry-After`. `/healthz` and `/metrics` are not
    /// counted.
    pub rate_per_minute: u32,
    /// Requests a token may make at once before the sustained rate applies (its bucket's size;
    /// 0 counts as 1).
    pub burst: u32,
}

impl Config {
    /// The defaults of `fhec serve` for a data directory.
    pub fn new(data: impl Into<PathBuf>) -> Config {
        Config::at(Location::Dir(data.into()))
    }

    /// The defaults of `fhec serve` for a data directory or a database.
    pub fn at(store: Location) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8710)),
            store,
            workers: 1,
            max_queue: 64,
            max_key_bytes: 2 << 30,
            key_memory: 8 << 30,
            lease: Duration::from_secs(30),
            retention: Some(Duration::from_secs(24 * 3600)),
            key_affinity: Duration::from_secs(60),
            rate_per_minute: 600,
            burst: 60,
        }
    }
}

/// Counters and histograms shown by `/metrics` (`Default` and the methods that record into
/// the histograms are in [`metrics`]).
pub struct Metrics {
    /// Jobs completed.
    pub jobs_done: AtomicU64,
    /// Jobs failed.
    pub jobs_failed: AtomicU64,
    /// Bootstraps performed by finished and running jobs.
    pub bootstraps_done: AtomicU64,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// `fhec_job_seconds`: completed jobs from submission to result, by model.
    pub job_seconds: metrics::Histograms,
    /// `fhec_job_run_seconds`: completed jobs from claim to result, by model.
    pub job_run_seconds: metrics::Histograms,
    /// `fhec_http_request_seconds`: requests by route template and status class.
    pub http_request_seconds: metrics::Histograms,
}

/// What the handlers and the workers share.
pub struct State {
    /// The configuration.
    pub config: Config,
    /// The models served, by name.
    pub models: Vec<Arc<Model>>,
    /// The database and blobs.
    pub store: Store,
    /// The loaded evaluation keys.
    pub cache: cache::KeyCache,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// The per-token rate limits.
    pub limiter: limit::RateLimiter,
    /// Wakes an idle worker when a job is queued.
    pub queued: tokio::sync::Notify,
    /// Set when the service stops: workers take no new job.
    pub stopping: AtomicBool,
}

impl State {
    /// The model served under `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A model did not load.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The data directory or its database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Two models with one name.
    #[error("two models are named {0:?}: serve each name once")]
    DuplicateModel(String),
    /// Nothing to serve.
    #[error("no model to serve: give at least one artifact (MODEL.fhec)")]
    NoModel,
}

/// A running service (on the caller's tokio runtime).
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// An admin token, when this start created the data directory's first one (print it
    /// once; only its hash is stored).
    pub admin_token: Option<String>,
    /// The shared state.
    pub state: Arc<State>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests and jobs, waits for open requests and for the running jobs
    /// (whose results are stored), then closes the database.
    pub async fn stop(self) {
        self.state.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        self.state.queued.notify_waiters();
        let _ = self.server.await;
        for w in self.workers {
            let _ = w.await;
        }
        self.state.store.close().await;
    }
}

/// Starts the service on the current tokio runtime: opens (or creates) the data directory,
/// re-queues jobs left running by a previous process, binds the address, and starts the
/// workers.
pub async fn start(config: Config, models: Vec<Model>) -> Result<Running, ServeError> {
    if models.is_empty() {
        return Err(ServeError::NoModel);
    }
    for (i, m) in models.iter().enumerate() {
        if models[..i].iter().any(|o| o.name == m.name) {
            return Err(ServeError::DuplicateModel(m.name.clone()));
        }
    }
    let store = Store::open(&config.store).await?;
    let admin_token = store.ensure_admin().await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let state = Arc::new(State {
        cache: cache::KeyCache::new(config.key_memory),
        limiter: limit::RateLimiter::new(config.rate_per_minute, config.burst),
        config,
        models: models.into_iter().map(Arc::new).collect(),
        store,
        metrics: Metrics::default(),
        queued: tokio::sync::Notify::new(),
        stopping: AtomicBool::new(false),
    });
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    let app = api::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    let mut workers: Vec<_> = (0..state.config.workers).map(|_| tokio::spawn(worker::run(state.clone()))).collect();
    if let Some(age) = state.config.retention {
        workers.push(tokio::spawn(worker::sweep(state.clone(), age)));
    }
    Ok(Running { addr, admin_token, state, shutdown, server, workers })
}

/// `fhec serve`: starts the service on a new runtime, calls `started` once it listens, and
/// runs until Ctrl-C (or SIGTERM), then stops as [`Running::stop`] does.
pub fn serve_blocking(config: Config, models: Vec<Model>, started: impl FnOnce(&Running)) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Store(StoreError::Io { path: PathBuf::from("tokio runtime"), source: e }))?;
    rt.block_on(async move {
        let running = start(config, models).await?;
        started(&running);
        shutdown_signal().await;
        running.stop().await;
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

/// Runs `f` on the store at `location` (opened, then closed) from blocking code: the admin
/// commands (`fhec serve-token`).
pub fn with_store_blocking<T>(
    location: &Location,
    f: impl AsyncFnOnce(&Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Io { path: PathBuf::from("tokio runtime"), source: e })?;
    rt.block_on(async {
        let store = Store::open(location).await?;
        let r = f(&store).await;
        store.close().await;
        r
    })
}
