//! The HTTP API (axum). Everything under `/v1` needs `Authorization: Bearer TOKEN`; a
//! client sees only its own keys and jobs (another client's is "not found"). Blobs travel as
//! `application/octet-stream`, everything else as JSON; every error is a JSON
//! `{"error": "..."}` with a 4xx status naming what is wrong (5xx only for the server's own
//! failures, such as its disk).
//!
//! Each token has a rate limit ([`crate::limit`]; `Config::rate_per_minute` sustained,
//! `Config::burst` at once; 600 a minute with bursts of 60 by default): a request beyond it
//! gets 429 with a `Retry-After` header (seconds) and an error naming the limit, whatever the
//! endpoint under `/v1`. A submission to a full queue also gets 429 (without `Retry-After`).
//! `/healthz` and `/metrics` need no token and are not limited; a request with no or an
//! unknown token is refused (401) before any limit applies.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /healthz` | `ok` (no token) |
//! | `GET /metrics` | Prometheus text (no token): gauges, counters (`fhec_rate_limited_total` among them) and the histograms of [`crate::metrics`] |
//! | `GET /v1/models` | `[{"name", "bootstraps", "params", "key_bytes", "image_bytes", "input_shape"}]` |
//! | `GET /v1/models/{name}/client` | the model's client part (no weights) |
//! | `POST /v1/models/{name}/keys` | body: the seeded evaluation key; 201 `{"key": ID}` |
//! | `DELETE /v1/keys/{id}` | 204 |
//! | `POST /v1/models/{name}/jobs?key=ID` | body: the encrypted image; 202 `{"job": ID}`; 429 when the queue is full |
//! | `GET /v1/jobs/{id}` | `{"id", "model", "state", "progress", "total", "error"}` |
//! | `GET /v1/jobs/{id}/result` | the encrypted result; 409 while not done |
//! | `DELETE /v1/jobs/{id}` | 204 |
//! | `POST /v1/models/{name}/classify?key=ID` | submits and waits: the encrypted result |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State as AxState};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use fhec_runtime::app::Server;
use fhec_runtime::fhe::SeededCtTensor;
use fhec_runtime::fhe::files::{Kind, kind_of, pair_of};

use crate::client::{JobStatus, ModelInfo};
use crate::limit::Limited;
use crate::store::{Blob, Caller, JobState, StoreError};
use crate::{Model, State};

/// An error response: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }

    /// 429 for a token over its rate limit, with `Retry-After`.
    fn rate_limited(l: Limited) -> ApiError {
        let secs = l.retry_after_secs();
        let requests = if l.rate_per_minute == 1 { "request" } else { "requests" };
        let message = format!(
            "rate limit exceeded: a token may make {} {requests} a minute (bursts of {}); retry in {secs} s",
            l.rate_per_minute, l.burst
        );
        ApiError { retry_after: Some(secs), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if let StoreError::Revoked = e {
            return ApiError::new(StatusCode::UNAUTHORIZED, "the token was revoked; nothing was stored");
        }
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the server's store failed: {e}"))
    }
}

type Shared = Arc<State>;
type ApiResult<T> = Result<T, ApiError>;

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("no token: send the header `Authorization: Bearer TOKEN`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        let caller = state.store.caller(token).await?.ok_or_else(|| unauthorized("unknown token"))?;
        if let Err(l) = state.limiter.check(caller.id) {
            state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::rate_limited(l));
        }
        Ok(caller)
    }
}

/// Middleware: times every request into `fhec_http_request_seconds`, by route template
/// (`unmatched` for a path no route has) and status class.
async fn track(AxState(state): AxState<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(&route, response.status(), start.elapsed());
    response
}

/// The router of a service.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}/client", get(client_part))
        .route("/v1/models/{name}/keys", post(upload_key))
        .route("/v1/keys/{id}", delete(delete_key))
        .route("/v1/models/{name}/jobs", post(submit))
        .route("/v1/models/{name}/classify", post(classify))
        .route("/v1/jobs/{id}", get(job_status).delete(delete_job))
        .route("/v1/jobs/{id}/result", get(job_result))
        .fallback(|| async { ApiError::not_found("no such endpoint (see GET /v1/models)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(AxState(state): AxState<Shared>) -> ApiResult<Response> {
    let queued = state.store.count(JobState::Queued).await?;
    let running = state.store.count(JobState::Running).await?;
    let keys = state.store.key_count().await?;
    let (loaded, loaded_bytes) = state.cache.usage();
    let m = &state.metrics;
    let mut s = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        s += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    metric("fhec_queue_depth", "gauge", "Jobs waiting for a worker.", queued.to_string());
    metric("fhec_jobs_running", "gauge", "Jobs being classified.", running.to_string());
    metric(
        "fhec_jobs_done_total",
        "counter",
        "Jobs completed since start.",
        m.jobs_done.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "fhec_jobs_failed_total",
        "counter",
        "Jobs failed since start.",
        m.jobs_failed.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "fhec_bootstraps_done_total",
        "counter",
        "Bootstraps performed since start.",
        m.bootstraps_done.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "fhec_rate_limited_total",
        "counter",
        "Requests refused by a token's rate limit since start.",
        m.rate_limited.load(Ordering::Relaxed).to_string(),
    );
    metric("fhec_keys_stored", "gauge", "Evaluation keys stored.", keys.to_string());
    metric("fhec_keys_loaded", "gauge", "Evaluation keys expanded in memory.", loaded.to_string());
    metric("fhec_keys_loaded_bytes", "gauge", "Bytes of the expanded evaluation keys.", loaded_bytes.to_string());
    metric("fhec_models", "gauge", "Models served.", state.models.len().to_string());
    m.render_histograms(&mut s);
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response())
}

fn info(m: &Model) -> ModelInfo {
    ModelInfo {
        name: m.name.clone(),
        bootstraps: m.bootstraps,
        params: m.params_summary(),
        key_bytes: m.key_bytes,
        image_bytes: m.image_bytes,
        input_shape: m.spec.input.shape.clone(),
    }
}

async fn models(_: Caller, AxState(state): AxState<Shared>) -> Json<Vec<ModelInfo>> {
    Json(state.models.iter().map(|m| info(m)).collect())
}

fn model(state: &Shared, name: &str) -> ApiResult<Arc<Model>> {
    state
        .model(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no model named {name:?} is served (GET /v1/models lists them)")))
}

fn octets(bytes: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

async fn client_part(_: Caller, AxState(state): AxState<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(octets(model(&state, &name)?.client_part.clone()))
}

/// Reads a request body of at most `limit` bytes: 413 beyond (by its Content-Length before
/// reading anything, or while reading), 400 if it is cut short.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    let too_large = |len: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} of {len} bytes is over the limit of {limit} bytes"),
        )
    };
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&n| n > limit as u64) {
        return Err(too_large(len.to_string()));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large("more than that".into());
            }
            source = s.source();
        }
        ApiError::bad(format!("{what} was not received completely ({inner}); nothing was stored"))
    })
}

async fn upload_key(
    caller: Caller,
    AxState(state): AxState<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let model = model(&state, &name)?;
    let bytes = read_body(&headers, body, state.config.max_key_bytes, "the evaluation key").await?;
    match kind_of(&bytes) {
        Some(Kind::SeededServerKey) => {}
        Some(Kind::ClientKey) => {
            return Err(ApiError::bad(
                "refused: the body is a client (secret) key, which must never leave the client; send the evaluation key (`Client::evaluation_key`, `server.key` of `fhec keygen`); nothing was stored",
            ));
        }
        Some(Kind::ServerKey) => {
            return Err(ApiError::bad(
                "the body is an evaluation key in full form; send the seeded form (`Client::evaluation_key`)",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad(format!(
                "the body holds {}, not an evaluation key; nothing was stored",
                other.name()
            )));
        }
        None => {
            return Err(ApiError::bad("the body is not an fhec evaluation key (bad magic bytes); nothing was stored"));
        }
    }
    if bytes.len() != model.key_bytes {
        return Err(ApiError::bad(format!(
            "an evaluation key for {name} is {} bytes, this one is {}; nothing was stored",
            model.key_bytes,
            bytes.len()
        )));
    }
    // The full check (parameters, every dimension, the key's expansion) before anything is stored.
    let (m, b) = (model.clone(), bytes.clone());
    let server = tokio::task::spawn_blocking(move || Server::new(&m.artifact, &b))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the key stopped: {e}")))?
        .map_err(|e| ApiError::bad(format!("evaluation key refused for {name}: {e}; nothing was stored")))?;
    let pair = pair_of(&bytes).map_or(0, |p| p.0);
    let len = bytes.len();
    let id = state.store.add_key(caller.id, &name, pair, bytes).await?;
    state.cache.insert(&id, model.loaded_key_bytes, server);
    let body = serde_json::json!({ "key": id, "model": name, "bytes": len });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn delete_key(caller: Caller, AxState(state): AxState<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if !state.store.delete_key(caller.id, &id).await? {
        return Err(ApiError::not_found(format!("no evaluation key {id}")));
    }
    state.cache.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks and queues a job; its id.
async fn queue_job(
    caller: &Caller,
    state: &Shared,
    name: &str,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<String> {
    let model = model(state, name)?;
    let Query(query) = query.map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
    let key_id = query.get("key").ok_or_else(|| {
        ApiError::bad("name the evaluation key: ?key=ID (the id `POST /v1/models/{name}/keys` returned)")
    })?;
    let key = state
        .store
        .key(Some(caller.id), key_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no evaluation key {key_id}")))?;
    if key.model != name {
        return Err(ApiError::bad(format!(
            "the evaluation key {key_id} is for the model {:?}, not {name:?}",
            key.model
        )));
    }
    let image = read_body(headers, body, model.image_bytes, "the encrypted image").await?;
    match kind_of(&image) {
        Some(Kind::SeededImage) => {}
        Some(other) => return Err(ApiError::bad(format!("the body holds {}, not an encrypted image", other.name()))),
        None => return Err(ApiError::bad("the body is not an fhec encrypted image (bad magic bytes)")),
    }
    if image.len() != model.image_bytes {
        return Err(ApiError::bad(format!(
            "an encrypted image for {name} is {} bytes (seeded form), this one is {}",
            model.image_bytes,
            image.len()
        )));
    }
    SeededCtTensor::from_bytes(&image, &model.spec.params)
        .map_err(|e| ApiError::bad(format!("the encrypted image does not load: {e}")))?;
    if pair_of(&image).map_or(0, |p| p.0) != key.pair {
        return Err(ApiError::bad(format!(
            "the encrypted image was not made with the client key of evaluation key {key_id} (another key pair)"
        )));
    }
    let max = state.config.max_queue;
    let id = state.store.submit(caller.id, name, key_id, model.bootstraps, image, max).await?.ok_or_else(|| {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("the queue is full ({max} jobs waiting); retry later"))
    })?;
    state.queued.notify_one();
    Ok(id)
}

async fn submit(
    caller: Caller,
    AxState(state): AxState<Shared>,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = queue_job(&caller, &state, &name, query, &headers, body).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "job": id }))).into_response())
}

async fn classify(
    caller: Caller,
    AxState(state): AxState<Shared>,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = queue_job(&caller, &state, &name, query, &headers, body).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job = state
            .store
            .job(caller.id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("job {id} was deleted")))?;
        match job.state {
            JobState::Done => {
                let result = state.store.read_blob(Blob::Result, &id).await?;
                state.store.delete_job(caller.id, &id).await?;
                return Ok(octets(result));
            }
            JobState::Failed => {
                let e = job.error.unwrap_or_default();
                state.store.delete_job(caller.id, &id).await?;
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("classification failed: {e}")));
            }
            JobState::Queued | JobState::Running => {}
        }
    }
}

async fn job(state: &Shared, caller: &Caller, id: &str) -> ApiResult<crate::store::JobRow> {
    state.store.job(caller.id, id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn job_status(
    caller: Caller,
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    let j = job(&state, &caller, &id).await?;
    Ok(Json(JobStatus {
        id: j.id,
        model: j.model,
        state: j.state.as_str().into(),
        progress: j.progress.max(0) as usize,
        total: j.total.max(0) as usize,
        error: j.error,
    }))
}

async fn job_result(caller: Caller, AxState(state): AxState<Shared>, Path(id): Path<String>) -> ApiResult<Response> {
    let j = job(&state, &caller, &id).await?;
    match j.state {
        JobState::Done => Ok(octets(state.store.read_blob(Blob::Result, &id).await?)),
        JobState::Failed => {
            Err(ApiError::new(StatusCode::CONFLICT, format!("job {id} failed: {}", j.error.unwrap_or_default())))
        }
        s => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} is {} ({}/{} bootstraps); poll GET /v1/jobs/{id}", s.as_str(), j.progress, j.total),
        )),
    }
}

async fn delete_job(caller: Caller, AxState(state): AxState<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if !state.store.delete_job(caller.id, &id).await? {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
