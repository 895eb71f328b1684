//! The service's durable state: tokens, keys and jobs in a database, and the blobs (keys,
//! encrypted images, encrypted results).
//!
//! Two places, one code path:
//! * **A data directory** (the default, no setup): SQLite in `DATA/fhec.sqlite`, blobs as
//!   files beside it (`DATA/blobs/{keys,inputs,results}/ID`). One machine.
//! * **PostgreSQL** (`postgres://...`): tables and blobs (`BYTEA`) in one database, so
//!   several `fhec serve` processes on several machines share the queue and the keys; a
//!   worker claims a job with `FOR UPDATE SKIP LOCKED`, so two never take the same one.
//!
//! Nothing is lost and nothing half-written is used:
//! * in a data directory a blob is written to `DATA/blobs/tmp/`, flushed, then renamed into
//!   place, and the row that makes it usable is inserted only after that; on PostgreSQL the
//!   blob and its row go in one transaction. An upload cut short leaves nothing usable;
//! * a job's result is stored the same way before the job is marked done;
//! * a running job holds a **lease** that its worker renews every second; a job whose lease
//!   ran out (its process was killed, its machine lost) is claimed again by any worker, so
//!   every accepted job is classified. A job interrupted [`MAX_ATTEMPTS`] times fails with
//!   that reason instead of looping. Times are the database's clock, so the machines' clocks
//!   need not agree.
//!
//! Tokens are stored as their BLAKE3 hash only. Every query on keys and jobs made for a
//! client filters by its owner, so another client's key or job is not found.

mod files;
mod sql;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
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
    /// A database written by another version of fhec.
    #[error(
        "{place} holds fhec serve data of schema version {found}, this fhec reads version {SCHEMA_VERSION}; use the fhec that made it, or a new place"
    )]
    Schema {
        /// The data directory or database.
        place: String,
        /// The version found.
        found: i64,
    },
    /// The token was revoked while its request was stored.
    #[error("the token was revoked")]
    Revoked,
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

/// Where the state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A data directory: SQLite and blob files (created if missing).
    Dir(PathBuf),
    /// A PostgreSQL database by URL (`postgres://user:password@host/db`); blobs in it.
    Postgres(String),
}

impl Location {
    /// `postgres://` or `postgresql://` URLs name a database; anything else is a directory.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Dir(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            // The URL without its password.
            Location::Postgres(url) => match url.split_once("://").and_then(|(s, r)| Some((s, r.split_once('@')?))) {
                Some((scheme, (user, host))) => {
                    write!(f, "{scheme}://{}@{host}", user.split(':').next().unwrap_or(""))
                }
                None => write!(f, "{url}"),
            },
        }
    }
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
    /// Being classified (under a worker's lease).
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
    /// Times a worker claimed it.
    pub attempts: i64,
    /// When it was submitted (milliseconds since the Unix epoch, the database's clock).
    pub created: i64,
}

type JobTuple = (String, i64, String, String, String, i64, i64, Option<String>, i64, i64);

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
        attempts: t.8,
        created: t.9,
    }
}

const JOB_COLUMNS: &str = "id, owner, model, key_id, state, progress, total, error, attempts, created";

use files::{blob_path, remove_stale_temporaries, write_atomic};
pub use sql::SCHEMA_VERSION;
use sql::{Dialect, SCHEMA, delete_blobs, insert_blob};

/// A job claimed this many times (each claim after the first means a worker was lost while
/// running it) fails instead of being claimed again.
pub const MAX_ATTEMPTS: i64 = 3;

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
    pub(super) fn dir(self) -> &'static str {
        match self {
            Blob::Key => "keys",
            Blob::Input => "inputs",
            Blob::Result => "results",
        }
    }
}

/// The tables rows are deleted from by owner.
#[derive(Clone, Copy)]
enum Table {
    Keys,
    Jobs,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Keys => "keys",
            Table::Jobs => "jobs",
        }
    }
}

enum Pool {
    /// SQLite, blobs in files under the data directory.
    Sqlite(SqlitePool, PathBuf),
    /// PostgreSQL, blobs in the `blobs` table.
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool, whichever database it is (the statements are
/// the same text; sqlx types them per database).
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p, _) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// Stores blob `(kind, id)` and runs the `INSERT` `sql` bound to `args`, so that the row
/// exists only with its blob: in a data directory the file is written (atomically) first and
/// removed if the row is not inserted; on PostgreSQL both go in one transaction, committed
/// only if the row is inserted. The rows inserted (0 when the statement's own condition
/// refused it).
macro_rules! insert_with_blob {
    ($store:expr, ($kind:expr, $id:expr, $bytes:expr), $sql:expr, $($arg:expr),+) => {
        match &$store.pool {
            Pool::Sqlite(p, data) => {
                Store::write_file(data, $kind, $id, $bytes).await?;
                let r = sqlx::query($sql)$(.bind($arg))+.execute(p).await;
                if !matches!(r, Ok(ref r) if r.rows_affected() == 1) {
                    $store.remove_files(&[($kind, $id)]).await;
                }
                r?.rows_affected()
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                insert_blob(&mut tx, $kind, $id, $bytes.as_ref()).await?;
                let n = sqlx::query($sql)$(.bind($arg))+.execute(&mut *tx).await?.rows_affected();
                if n == 1 {
                    tx.commit().await?;
                }
                n
            }
        }
    };
}

// After the macro, which it uses.
mod jobs;

/// The database and the blobs.
pub struct Store {
    pool: Pool,
    dialect: Dialect,
    place: String,
}

impl Store {
    /// Opens the state at `location` (a data directory is created with its database if
    /// missing; a PostgreSQL database gets its tables), and removes the temporary files of
    /// writes that were cut short.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let store = match location {
            Location::Dir(data) => {
                for sub in ["blobs/keys", "blobs/inputs", "blobs/results", "blobs/tmp"] {
                    let d = data.join(sub);
                    std::fs::create_dir_all(&d).map_err(io(&d))?;
                }
                remove_stale_temporaries(&data.join("blobs/tmp"))?;
                let options = SqliteConnectOptions::new()
                    .filename(data.join("fhec.sqlite"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
                Store { pool: Pool::Sqlite(pool, data.clone()), dialect: Dialect::Sqlite, place: location.to_string() }
            }
            Location::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?;
                Store { pool: Pool::Postgres(pool), dialect: Dialect::Postgres, place: location.to_string() }
            }
        };
        store.create_schema().await?;
        Ok(store)
    }

    /// Creates the tables (once, under a lock, when several processes start together) and
    /// checks the schema version.
    async fn create_schema(&self) -> Result<(), StoreError> {
        let d = self.dialect;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            if let Dialect::Postgres = d {
                sqlx::query("SELECT pg_advisory_xact_lock(8710)").execute(&mut *tx).await?;
            }
            // Tables of the first version had no `meta` table.
            let (old,): (i64,) = sqlx::query_as(match d {
                Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                Dialect::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'jobs'",
            })
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(&d.sql("CREATE TABLE IF NOT EXISTS meta (schema {int} NOT NULL)")).execute(&mut *tx).await?;
            let found: Option<(i64,)> = sqlx::query_as("SELECT schema FROM meta").fetch_optional(&mut *tx).await?;
            match found {
                Some((v,)) if v != SCHEMA_VERSION => {
                    return Err(StoreError::Schema { place: self.place.clone(), found: v });
                }
                None if old > 0 => return Err(StoreError::Schema { place: self.place.clone(), found: 1 }),
                None => {
                    sqlx::query("INSERT INTO meta (schema) VALUES ($1)").bind(SCHEMA_VERSION).execute(&mut *tx).await?;
                }
                Some(_) => {}
            }
            for statement in SCHEMA {
                sqlx::query(&d.sql(statement)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Closes the database.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Where the state lives (a PostgreSQL URL without its password).
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Milliseconds since the Unix epoch on the database's clock.
    pub async fn now(&self) -> Result<i64, StoreError> {
        let q = self.dialect.sql("SELECT {now}");
        let (t,): (i64,) = on_pool!(self, p => sqlx::query_as(&q).fetch_one(p).await?);
        Ok(t)
    }

    // Blobs.

    /// Reads a blob.
    pub async fn read_blob(&self, kind: Blob, id: &str) -> Result<Vec<u8>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_, data) => {
                let p = blob_path(data, kind, id);
                tokio::fs::read(&p).await.map_err(io(&p))
            }
            Pool::Postgres(p) => {
                let (b,): (Vec<u8>,) = sqlx::query_as("SELECT data FROM blobs WHERE kind = $1 AND id = $2")
                    .bind(kind.dir())
                    .bind(id)
                    .fetch_one(p)
                    .await?;
                Ok(b)
            }
        }
    }

    /// Writes a blob file atomically (temporary file, flushed, renamed, directory flushed).
    async fn write_file(
        data: &Path,
        kind: Blob,
        id: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<(), StoreError> {
        let dest = blob_path(data, kind, id);
        let tmp = data.join("blobs/tmp").join(format!("{}-{id}-{}", kind.dir(), random_hex(4)));
        let dir = data.to_path_buf();
        tokio::task::spawn_blocking(move || write_atomic(&tmp, &dest, bytes.as_ref()))
            .await
            .map_err(|e| StoreError::Io { path: dir, source: std::io::Error::other(e) })?
    }

    /// Removes blobs (files; on PostgreSQL the caller deletes the rows in its transaction).
    async fn remove_files(&self, blobs: &[(Blob, &str)]) {
        if let Pool::Sqlite(_, data) = &self.pool {
            for (kind, id) in blobs {
                let _ = tokio::fs::remove_file(blob_path(data, *kind, id)).await;
            }
        }
    }

    // Tokens.

    /// Creates an admin token when there is none, and returns it.
    pub async fn ensure_admin(&self) -> Result<Option<String>, StoreError> {
        let (n,): (i64,) = on_pool!(self, p => {
            sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE admin = $1").bind(true).fetch_one(p).await?
        });
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
        let q = self.dialect.sql(
            "INSERT INTO tokens (name, token_hash, admin, created) VALUES ($1, $2, $3, {now}) ON CONFLICT (name) DO NOTHING",
        );
        let added = on_pool!(self, p => {
            sqlx::query(&q).bind(name).bind(token_hash(&token)).bind(admin).execute(p).await?.rows_affected()
        });
        if added == 0 {
            return Err(StoreError::TokenExists(name.into()));
        }
        Ok(token)
    }

    /// The client of a token, if it is one.
    pub async fn caller(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        let row: Option<(i64, String, bool)> = on_pool!(self, p => {
            sqlx::query_as("SELECT id, name, admin FROM tokens WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id, name, admin)| Caller { id, name, admin }))
    }

    /// The tokens' names, whether each is an admin's, and how many keys and jobs each has.
    pub async fn tokens(&self) -> Result<Vec<(String, bool, i64, i64)>, StoreError> {
        let q = "SELECT name, admin,
                    (SELECT COUNT(*) FROM keys WHERE keys.owner = tokens.id),
                    (SELECT COUNT(*) FROM jobs WHERE jobs.owner = tokens.id)
                 FROM tokens ORDER BY name";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await?))
    }

    /// Revokes the token named `name`: it no longer authenticates, and its keys, jobs,
    /// images and results are deleted. Whether it existed.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = on_pool!(self, p => {
            sqlx::query_as("SELECT id FROM tokens WHERE name = $1").bind(name).fetch_optional(p).await?
        });
        let Some((owner,)) = row else { return Ok(false) };
        // The token first: from here on nothing new is stored under it.
        on_pool!(self, p => sqlx::query("DELETE FROM tokens WHERE id = $1").bind(owner).execute(p).await?.rows_affected());
        let keys: Vec<(String,)> = on_pool!(self, p => {
            sqlx::query_as("SELECT id FROM keys WHERE owner = $1").bind(owner).fetch_all(p).await?
        });
        let jobs: Vec<(String,)> = on_pool!(self, p => {
            sqlx::query_as("SELECT id FROM jobs WHERE owner = $1").bind(owner).fetch_all(p).await?
        });
        for (k,) in &keys {
            self.delete_key(owner, k).await?;
        }
        for (j,) in &jobs {
            self.delete_job(owner, j).await?;
        }
        Ok(true)
    }

    // Keys.

    /// Stores an evaluation key (already checked) for `owner` and returns its id: the blob
    /// first, then the row (one transaction on PostgreSQL).
    pub async fn add_key(
        &self,
        owner: i64,
        model: &str,
        pair: u64,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<String, StoreError> {
        let id = random_hex(16);
        let len = bytes.as_ref().len() as i64;
        let insert = self.dialect.sql(
            "INSERT INTO keys (id, owner, model, bytes, pair, created) SELECT $1, $2, $3, $4, $5, {now}
             WHERE EXISTS (SELECT 1 FROM tokens WHERE id = $2)",
        );
        let added = insert_with_blob!(self, (Blob::Key, &id, bytes), &insert, &id, owner, model, len, pair as i64);
        if added == 0 {
            // The token was revoked during the upload.
            return Err(StoreError::Revoked);
        }
        Ok(id)
    }

    /// A key of `owner` (any owner's when `None`: the workers).
    pub async fn key(&self, owner: Option<i64>, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let row: Option<(String, i64, String, i64, i64)> = on_pool!(self, p => {
            sqlx::query_as("SELECT id, owner, model, bytes, pair FROM keys WHERE id = $1 AND ($2 IS NULL OR owner = $2)")
                .bind(id)
                .bind(owner)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id, owner, model, bytes, pair)| KeyRow { id, owner, model, bytes, pair: pair as u64 }))
    }

    /// Deletes a key of `owner`; whether it existed.
    pub async fn delete_key(&self, owner: i64, id: &str) -> Result<bool, StoreError> {
        self.delete_owned(Table::Keys, owner, id, &[(Blob::Key, id)]).await
    }

    /// Deletes row `id` of `owner` from `table` and, with it, `blobs`; whether it existed.
    async fn delete_owned(
        &self,
        table: Table,
        owner: i64,
        id: &str,
        blobs: &[(Blob, &str)],
    ) -> Result<bool, StoreError> {
        let q = format!("DELETE FROM {} WHERE id = $1 AND owner = $2", table.name());
        let deleted = match &self.pool {
            Pool::Sqlite(p, _) => sqlx::query(&q).bind(id).bind(owner).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                let n = sqlx::query(&q).bind(id).bind(owner).execute(&mut *tx).await?.rows_affected();
                if n > 0 {
                    delete_blobs(&mut tx, blobs).await?;
                }
                tx.commit().await?;
                n
            }
        };
        if deleted > 0 {
            self.remove_files(blobs).await;
        }
        Ok(deleted > 0)
    }

    /// Keys stored, all clients together.
    pub async fn key_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM keys").fetch_one(p).await?);
        Ok(n)
    }
}
