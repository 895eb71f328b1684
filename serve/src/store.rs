//! The service's durable state: a SQLite database (`DATA/fhec.sqlite`: tokens, keys, jobs)
//! and blob files beside it (`DATA/blobs/{keys,inputs,results}/ID`).
//!
//! Nothing is lost and nothing half-written is used:
//! * a blob is written to `DATA/blobs/tmp/`, flushed, then renamed into place, and the row
//!   that makes it usable is inserted only after that; an upload cut short leaves at most a
//!   temporary file (removed at the next start) or an unreferenced blob, never a row;
//! * a job's result is written the same way before the job is marked done;
//! * a job left `running` by a process that stopped is queued again when the store opens, so
//!   every accepted job is classified.
//!
//! Tokens are stored as their BLAKE3 hash only. Every query on keys and jobs made for a
//! client filters by its owner, so another client's key or job is not found.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory of the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A token name already taken.
    #[error("a token named {0:?} exists; choose another name")]
    TokenExists(String),
    /// A token name that is empty or too long.
    #[error("a token name must be 1 to 64 characters, not {0:?}")]
    BadTokenName(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The client a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its token's row id (the owner of its keys and jobs).
    pub id: i64,
    /// The token's name.
    pub name: String,
    /// Whether it is an admin token.
    pub admin: bool,
}

/// A stored evaluation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// Its id.
    pub id: String,
    /// The owner's token id.
    pub owner: i64,
    /// The model it was checked against.
    pub model: String,
    /// Its size as uploaded.
    pub bytes: i64,
    /// The key pair it belongs to (bit pattern of the runtime's `KeyPairId`).
    pub pair: u64,
}

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being classified.
    Running,
    /// Its result is stored.
    Done,
    /// It failed (see its error).
    Failed,
}

impl JobState {
    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            _ => JobState::Failed,
        }
    }
}

/// A job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    /// Its id.
    pub id: String,
    /// The owner's token id.
    pub owner: i64,
    /// The model.
    pub model: String,
    /// The evaluation key it runs with.
    pub key_id: String,
    /// Its state.
    pub state: JobState,
    /// Bootstraps done.
    pub progress: i64,
    /// Bootstraps in all.
    pub total: i64,
    /// Why it failed.
    pub error: Option<String>,
}

type JobTuple = (String, i64, String, String, String, i64, i64, Option<String>);

fn job_of(t: JobTuple) -> JobRow {
    JobRow {
        id: t.0,
        owner: t.1,
        model: t.2,
        key_id: t.3,
        state: JobState::parse(&t.4),
        progress: t.5,
        total: t.6,
        error: t.7,
    }
}

const JOB_COLUMNS: &str = "id, owner, model, key_id, state, progress, total, error";

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        admin INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        owner INTEGER NOT NULL,
        model TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        pair INTEGER NOT NULL,
        created INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner INTEGER NOT NULL,
        model TEXT NOT NULL,
        key_id TEXT NOT NULL,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        error TEXT,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created)",
];

/// Milliseconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `n` random bytes in hex.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The stored form of a token.
fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Which blobs.
#[derive(Clone, Copy, Debug)]
pub enum Blob {
    /// Evaluation keys.
    Key,
    /// Encrypted images of queued jobs.
    Input,
    /// Encrypted results.
    Result,
}

impl Blob {
    fn dir(self) -> &'static str {
        match self {
            Blob::Key => "keys",
            Blob::Input => "inputs",
            Blob::Result => "results",
        }
    }
}

/// The database and the blobs of a data directory.
pub struct Store {
    pool: SqlitePool,
    data: PathBuf,
}

impl Store {
    /// Opens the data directory `data` (created with its database if missing), removes the
    /// temporary files of writes that were cut short, and queues again the jobs a previous
    /// process left running.
    pub async fn open(data: &Path) -> Result<Store, StoreError> {
        for sub in ["blobs/keys", "blobs/inputs", "blobs/results", "blobs/tmp"] {
            let d = data.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let tmp = data.join("blobs/tmp");
        for e in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let options = SqliteConnectOptions::new()
            .filename(data.join("fhec.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        let store = Store { pool, data: data.to_path_buf() };
        store.requeue_running().await?;
        Ok(store)
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Queues again every job marked running (at start: no worker runs it any more).
    pub async fn requeue_running(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE jobs SET state = 'queued', progress = 0, updated = ?1 WHERE state = 'running'")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The path of a blob.
    pub fn blob_path(&self, kind: Blob, id: &str) -> PathBuf {
        self.data.join("blobs").join(kind.dir()).join(id)
    }

    /// Writes a blob atomically (temporary file, flushed, renamed, directory flushed).
    pub async fn write_blob(
        &self,
        kind: Blob,
        id: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<(), StoreError> {
        let dest = self.blob_path(kind, id);
        let tmp = self.data.join("blobs/tmp").join(format!("{}-{id}-{}", kind.dir(), random_hex(4)));
        tokio::task::spawn_blocking(move || write_atomic(&tmp, &dest, bytes.as_ref()))
            .await
            .map_err(|e| StoreError::Io { path: self.data.clone(), source: std::io::Error::other(e) })?
    }

    /// Reads a blob.
    pub async fn read_blob(&self, kind: Blob, id: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(kind, id);
        tokio::fs::read(&p).await.map_err(io(&p))
    }

    async fn remove_blob(&self, kind: Blob, id: &str) {
        let _ = tokio::fs::remove_file(self.blob_path(kind, id)).await;
    }

    // Tokens.

    /// Creates an admin token when the data directory has none, and returns it.
    pub async fn ensure_admin(&self) -> Result<Option<String>, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE admin = 1").fetch_one(&self.pool).await?;
        if n > 0 {
            return Ok(None);
        }
        let mut name = "admin".to_string();
        let mut i = 1;
        loop {
            match self.create_token(&name, true).await {
                Err(StoreError::TokenExists(_)) => {
                    i += 1;
                    name = format!("admin{i}");
                }
                r => return r.map(Some),
            }
        }
    }

    /// Creates a token named `name` and returns it (only its hash is stored).
    pub async fn create_token(&self, name: &str, admin: bool) -> Result<String, StoreError> {
        if name.is_empty() || name.chars().count() > 64 {
            return Err(StoreError::BadTokenName(name.into()));
        }
        let token = format!("fhec_{}", random_hex(32));
        let r = sqlx::query(
            "INSERT INTO tokens (name, token_hash, admin, created) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(token_hash(&token))
        .bind(admin)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::TokenExists(name.into()));
        }
        Ok(token)
    }

    /// The client of a token, if it is one.
    pub async fn caller(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        let row: Option<(i64, String, bool)> =
            sqlx::query_as("SELECT id, name, admin FROM tokens WHERE token_hash = ?1")
                .bind(token_hash(token))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, name, admin)| Caller { id, name, admin }))
    }

    // Keys.

    /// Stores an evaluation key (already checked) for `owner` and returns its id: the blob
    /// first, then the row.
    pub async fn add_key(
        &self,
        owner: i64,
        model: &str,
        pair: u64,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<String, StoreError> {
        let id = random_hex(16);
        let len = bytes.as_ref().len() as i64;
        self.write_blob(Blob::Key, &id, bytes).await?;
        sqlx::query("INSERT INTO keys (id, owner, model, bytes, pair, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .bind(&id)
            .bind(owner)
            .bind(model)
            .bind(len)
            .bind(pair as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// A key of `owner` (any owner's when `None`: the workers).
    pub async fn key(&self, owner: Option<i64>, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let row: Option<(String, i64, String, i64, i64)> = sqlx::query_as(
            "SELECT id, owner, model, bytes, pair FROM keys WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, owner, model, bytes, pair)| KeyRow { id, owner, model, bytes, pair: pair as u64 }))
    }

    /// Deletes a key of `owner`; whether it existed.
    pub async fn delete_key(&self, owner: i64, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM keys WHERE id = ?1 AND owner = ?2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        self.remove_blob(Blob::Key, id).await;
        Ok(true)
    }

    // Jobs.

    /// Queues a job for `owner` on an encrypted image (already checked): the image first,
    /// then the row, inserted only while fewer than `max_queue` jobs are queued (checked in
    /// the same statement). `None` when the queue is full (nothing stored).
    #[allow(clippy::too_many_arguments)]
    pub async fn submit(
        &self,
        owner: i64,
        model: &str,
        key_id: &str,
        total: usize,
        image: impl AsRef<[u8]> + Send + 'static,
        max_queue: usize,
    ) -> Result<Option<String>, StoreError> {
        if self.count(JobState::Queued).await? >= max_queue as i64 {
            return Ok(None);
        }
        let id = random_hex(16);
        self.write_blob(Blob::Input, &id, image).await?;
        let t = now();
        let r = sqlx::query(
            "INSERT INTO jobs (id, owner, model, key_id, state, progress, total, error, created, updated)
             SELECT ?1, ?2, ?3, ?4, 'queued', 0, ?5, NULL, ?6, ?6
             WHERE (SELECT COUNT(*) FROM jobs WHERE state = 'queued') < ?7",
        )
        .bind(&id)
        .bind(owner)
        .bind(model)
        .bind(key_id)
        .bind(total as i64)
        .bind(t)
        .bind(max_queue as i64)
        .execute(&self.pool)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => Ok(Some(id)),
            other => {
                self.remove_blob(Blob::Input, &id).await;
                other.map(|_| None).map_err(StoreError::from)
            }
        }
    }

    /// Jobs in a state.
    pub async fn count(&self, state: JobState) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE state = ?1")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// A job of `owner`.
    pub async fn job(&self, owner: i64, id: &str) -> Result<Option<JobRow>, StoreError> {
        let q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND owner = ?2");
        let row: Option<JobTuple> = sqlx::query_as(&q).bind(id).bind(owner).fetch_optional(&self.pool).await?;
        Ok(row.map(job_of))
    }

    /// Marks the oldest queued job running and returns it, in one statement (two workers
    /// never claim the same job).
    pub async fn claim(&self) -> Result<Option<JobRow>, StoreError> {
        let q = format!(
            "UPDATE jobs SET state = 'running', progress = 0, updated = ?1
             WHERE state = 'queued' AND id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT 1)
             RETURNING {JOB_COLUMNS}"
        );
        let row: Option<JobTuple> = sqlx::query_as(&q).bind(now()).fetch_optional(&self.pool).await?;
        Ok(row.map(job_of))
    }

    /// Records a running job's progress.
    pub async fn set_progress(&self, id: &str, progress: usize) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET progress = ?2, updated = ?3 WHERE id = ?1 AND state = 'running'")
            .bind(id)
            .bind(progress as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a job's result (atomically) and marks it done; `false` if the job was deleted
    /// meanwhile (its result is then removed).
    pub async fn finish(&self, id: &str, result: Vec<u8>) -> Result<bool, StoreError> {
        self.write_blob(Blob::Result, id, result).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'done', progress = total, error = NULL, updated = ?2 WHERE id = ?1 AND state = 'running'",
        )
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            self.remove_blob(Blob::Result, id).await;
            return Ok(false);
        }
        self.remove_blob(Blob::Input, id).await;
        Ok(true)
    }

    /// Marks a job failed with a message.
    pub async fn fail(&self, id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'failed', error = ?2, updated = ?3 WHERE id = ?1")
            .bind(id)
            .bind(error)
            .bind(now())
            .execute(&self.pool)
            .await?;
        self.remove_blob(Blob::Input, id).await;
        Ok(())
    }

    /// Deletes a job of `owner` with its image and result; whether it existed. A running job
    /// goes on, and its result is dropped when it ends.
    pub async fn delete_job(&self, owner: i64, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM jobs WHERE id = ?1 AND owner = ?2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        self.remove_blob(Blob::Input, id).await;
        self.remove_blob(Blob::Result, id).await;
        Ok(true)
    }

    /// Keys stored, all clients together.
    pub async fn key_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM keys").fetch_one(&self.pool).await?;
        Ok(n)
    }
}

/// Writes `bytes` to `tmp`, flushes it, renames it to `dest` and flushes the directory; on
/// failure the temporary file is removed.
fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let result = (|| {
        let mut f = std::fs::File::create_new(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, dest)?;
        #[cfg(unix)]
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        StoreError::Io { path: dest.to_path_buf(), source }
    })
}
