//! The SQL both databases share: the tables, the fragments that differ between SQLite and
//! PostgreSQL, and the PostgreSQL blob rows.

use super::{Blob, StoreError};

/// The version of the tables below, kept in the `meta` table; another version is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// The tables, for each database (`{id}`, `{bool}`, `{int}` filled in by [`Dialect`]).
pub(super) const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS tokens (
        id {id},
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        admin {bool} NOT NULL,
        created {int} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        owner {int} NOT NULL,
        model TEXT NOT NULL,
        bytes {int} NOT NULL,
        pair {int} NOT NULL,
        created {int} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner {int} NOT NULL,
        model TEXT NOT NULL,
        key_id TEXT NOT NULL,
        state TEXT NOT NULL,
        progress {int} NOT NULL DEFAULT 0,
        total {int} NOT NULL,
        error TEXT,
        worker TEXT,
        attempts {int} NOT NULL DEFAULT 0,{seq_column}
        created {int} NOT NULL,
        updated {int} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created)",
    "CREATE TABLE IF NOT EXISTS blobs (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        data {bytes} NOT NULL,
        PRIMARY KEY (kind, id))",
];

/// What differs between SQLite and PostgreSQL SQL; every statement is written once with
/// `$N` parameters (which both read) and these fragments: column types, `{now}` (the
/// database's clock in milliseconds), `{skip_locked}`, and `{seq}` (the order of insertion,
/// which breaks ties between jobs submitted in one millisecond: SQLite's `rowid`, an
/// identity column on PostgreSQL), and `{find}` (the position of a string in another:
/// `instr` / `strpos`).
#[derive(Clone, Copy)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub(super) fn sql(self, q: &str) -> String {
        let (id, boolean, int, bytes, now, lock, seq_column, seq, find) = match self {
            Dialect::Sqlite => (
                "INTEGER PRIMARY KEY",
                "INTEGER",
                "INTEGER",
                "BLOB",
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
                "",
                "",
                "rowid",
                "instr",
            ),
            Dialect::Postgres => (
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "BOOLEAN",
                "BIGINT",
                "BYTEA",
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                "FOR UPDATE SKIP LOCKED",
                "\n        seq BIGINT GENERATED ALWAYS AS IDENTITY,",
                "seq",
                "strpos",
            ),
        };
        q.replace("{id}", id)
            .replace("{bool}", boolean)
            .replace("{int}", int)
            .replace("{bytes}", bytes)
            .replace("{now}", now)
            .replace("{skip_locked}", lock)
            .replace("{seq_column}", seq_column)
            .replace("{seq}", seq)
            .replace("{find}", find)
    }
}

/// Inserts (or replaces) a blob row in a transaction.
pub(super) async fn insert_blob(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    kind: Blob,
    id: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO blobs (kind, id, data) VALUES ($1, $2, $3) ON CONFLICT (kind, id) DO UPDATE SET data = $3",
    )
    .bind(kind.dir())
    .bind(id)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes blob rows in a transaction.
pub(super) async fn delete_blobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    blobs: &[(Blob, &str)],
) -> Result<(), StoreError> {
    for (kind, id) in blobs {
        sqlx::query("DELETE FROM blobs WHERE kind = $1 AND id = $2")
            .bind(kind.dir())
            .bind(*id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
