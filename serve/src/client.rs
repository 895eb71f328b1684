//! [`RemoteClient`]: the blocking client of a `fhec serve` service, for applications and
//! `fhec remote`. It moves bytes only: keys are generated, images encrypted and results
//! decrypted locally with [`fhec_runtime::app::Client`]; the secret key never goes through
//! it.
//!
//! ```no_run
//! use fhec_runtime::app::Client;
//! use fhec_serve::RemoteClient;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let remote = RemoteClient::new("http://127.0.0.1:8710", "fhec_...");
//! let client = Client::new(&remote.client_part("seedq_mnist")?)?; // keys made here
//! let key = remote.upload_key("seedq_mnist", &client.evaluation_key())?; // once
//! let job = remote.submit("seedq_mnist", &key, &client.encrypt(&[0u8; 28 * 28])?)?;
//! let result = remote.wait(&job, |s| eprintln!("{}/{}", s.progress, s.total))?;
//! println!("class {}", client.decrypt(&result)?.class);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A served model, as `GET /v1/models` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name in URLs.
    pub name: String,
    /// Bootstraps of one classification.
    pub bootstraps: usize,
    /// Its TFHE parameters in one line.
    pub params: String,
    /// Bytes of its evaluation key (seeded form).
    pub key_bytes: usize,
    /// Bytes of one encrypted image (seeded form).
    pub image_bytes: usize,
    /// Its input's shape.
    pub input_shape: Vec<usize>,
}

/// A job's status, as `GET /v1/jobs/{id}` gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Its id.
    pub id: String,
    /// Its model.
    pub model: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Bootstraps done.
    pub progress: usize,
    /// Bootstraps in all.
    pub total: usize,
    /// Why it failed.
    pub error: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The service answered with an error status and message.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// The request did not reach the service, or its answer did not arrive.
    #[error("{url}: {message}")]
    Transport {
        /// The request's URL.
        url: String,
        /// Why.
        message: String,
    },
    /// An answer that is not what the API says.
    #[error("{url}: unexpected answer: {message}")]
    Decode {
        /// The request's URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The job failed on the server.
    #[error("job {job} failed: {message}")]
    JobFailed {
        /// The job.
        job: String,
        /// The server's reason.
        message: String,
    },
}

impl RemoteError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Times a request refused by the service's rate limit is sent again by default (after the
/// wait it names) before the refusal is returned.
pub const RATE_LIMIT_RETRIES: usize = 3;

/// The largest answer read (an encrypted result or client part is far smaller).
const MAX_ANSWER: u64 = 1 << 30;

/// A blocking client of one service with one token.
pub struct RemoteClient {
    agent: ureq::Agent,
    base: String,
    token: String,
    retries: usize,
}

enum Method {
    Get,
    Post,
    Delete,
}

impl RemoteClient {
    /// A client of the service at `url` (`http://HOST:PORT`) with an API token.
    pub fn new(url: &str, token: &str) -> RemoteClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build();
        RemoteClient {
            agent: ureq::Agent::new_with_config(config),
            base: url.trim_end_matches('/').into(),
            token: token.into(),
            retries: RATE_LIMIT_RETRIES,
        }
    }

    /// The same client, retrying a request refused by the rate limit `retries` times (0: the
    /// refusal is returned at once) instead of [`RATE_LIMIT_RETRIES`].
    pub fn with_rate_limit_retries(mut self, retries: usize) -> RemoteClient {
        self.retries = retries;
        self
    }

    /// Sends a request; the answer's body when its status is 2xx. A 429 that says when to
    /// retry (`Retry-After`, the service's rate limit) is retried after that wait, up to
    /// `self.retries` times; a 429 without it (a full queue) is returned.
    fn request(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, RemoteError> {
        let mut retries = 0;
        loop {
            match self.request_once(&method, path, body)? {
                Ok(bytes) => return Ok(bytes),
                Err((_, Some(wait))) if retries < self.retries => {
                    retries += 1;
                    std::thread::sleep(wait);
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One request: its body, or its error with the wait a 429 asked for.
    #[allow(clippy::type_complexity)]
    fn request_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Result<Vec<u8>, (RemoteError, Option<Duration>)>, RemoteError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let transport = |e: ureq::Error| RemoteError::Transport { url: url.clone(), message: e.to_string() };
        let answer = match (method, body) {
            (Method::Get, _) => self.agent.get(url.as_str()).header("Authorization", auth.as_str()).call(),
            (Method::Delete, _) => self.agent.delete(url.as_str()).header("Authorization", auth.as_str()).call(),
            (Method::Post, Some(b)) => self
                .agent
                .post(url.as_str())
                .header("Authorization", auth.as_str())
                .header("Content-Type", "application/octet-stream")
                .send(b),
            (Method::Post, None) => self.agent.post(url.as_str()).header("Authorization", auth.as_str()).send_empty(),
        };
        let mut answer = answer.map_err(transport)?;
        let status = answer.status().as_u16();
        let retry_after = (status == 429)
            .then(|| answer.headers().get("retry-after")?.to_str().ok()?.trim().parse::<u64>().ok())
            .flatten()
            .map(|s| Duration::from_secs(s.clamp(1, 60)));
        let bytes = answer.body_mut().with_config().limit(MAX_ANSWER).read_to_vec().map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(Ok(bytes));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Ok(Err((RemoteError::Status { url, status, message }, retry_after)))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str, bytes: Vec<u8>) -> Result<T, RemoteError> {
        serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Decode { url: format!("{}{path}", self.base), message: e.to_string() })
    }

    /// A string field of a JSON answer.
    fn field(&self, path: &str, bytes: Vec<u8>, name: &str) -> Result<String, RemoteError> {
        let v: serde_json::Value = self.json(path, bytes)?;
        v.get(name).and_then(|x| x.as_str()).map(String::from).ok_or_else(|| RemoteError::Decode {
            url: format!("{}{path}", self.base),
            message: format!("no {name:?} field"),
        })
    }

    /// The models served.
    pub fn models(&self) -> Result<Vec<ModelInfo>, RemoteError> {
        let b = self.request(Method::Get, "/v1/models", None)?;
        self.json("/v1/models", b)
    }

    /// A model's client part (parameters and encodings, no weights): what
    /// [`fhec_runtime::app::Client::new`] takes.
    pub fn client_part(&self, model: &str) -> Result<Vec<u8>, RemoteError> {
        self.request(Method::Get, &format!("/v1/models/{model}/client"), None)
    }

    /// Uploads an evaluation key ([`fhec_runtime::app::Client::evaluation_key`]) for a
    /// model; its id.
    pub fn upload_key(&self, model: &str, evaluation_key: &[u8]) -> Result<String, RemoteError> {
        let path = format!("/v1/models/{model}/keys");
        let b = self.request(Method::Post, &path, Some(evaluation_key))?;
        self.field(&path, b, "key")
    }

    /// Deletes an uploaded key.
    pub fn delete_key(&self, key: &str) -> Result<(), RemoteError> {
        self.request(Method::Delete, &format!("/v1/keys/{key}"), None).map(drop)
    }

    /// Submits an encrypted image to be classified with an uploaded key; the job's id.
    pub fn submit(&self, model: &str, key: &str, encrypted_image: &[u8]) -> Result<String, RemoteError> {
        let path = format!("/v1/models/{model}/jobs?key={key}");
        let b = self.request(Method::Post, &path, Some(encrypted_image))?;
        self.field(&path, b, "job")
    }

    /// A job's status.
    pub fn status(&self, job: &str) -> Result<JobStatus, RemoteError> {
        let path = format!("/v1/jobs/{job}");
        let b = self.request(Method::Get, &path, None)?;
        self.json(&path, b)
    }

    /// A finished job's encrypted result.
    pub fn result(&self, job: &str) -> Result<Vec<u8>, RemoteError> {
        self.request(Method::Get, &format!("/v1/jobs/{job}/result"), None)
    }

    /// Waits for a job (polling its status every half second, calling `progress` with each),
    /// then returns its encrypted result.
    pub fn wait(&self, job: &str, mut progress: impl FnMut(&JobStatus)) -> Result<Vec<u8>, RemoteError> {
        loop {
            let s = self.status(job)?;
            progress(&s);
            match s.state.as_str() {
                "done" => return self.result(job),
                "failed" => {
                    return Err(RemoteError::JobFailed { job: job.into(), message: s.error.unwrap_or_default() });
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Submits and waits in one request (the synchronous endpoint); the encrypted result.
    pub fn classify(&self, model: &str, key: &str, encrypted_image: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.request(Method::Post, &format!("/v1/models/{model}/classify?key={key}"), Some(encrypted_image))
    }

    /// Deletes a job with its image and result.
    pub fn delete_job(&self, job: &str) -> Result<(), RemoteError> {
        self.request(Method::Delete, &format!("/v1/jobs/{job}"), None).map(drop)
    }
}
