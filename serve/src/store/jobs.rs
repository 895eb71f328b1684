//! The job queue: submission under the queue bound, claims under a lease, heartbeats,
//! results, and the sweep of old results.

use std::time::Duration;

use super::files::blob_path;
use super::sql::{delete_blobs, insert_blob};
use super::{Blob, JOB_COLUMNS, JobRow, JobState, JobTuple, Pool, Store, StoreError, Table, io, job_of, random_hex};

impl Store {
    /// Queues a job for `owner` on an encrypted image (already checked): the image first,
    /// then the row, inserted only while fewer than `max_queue` jobs are queued (checked in
    /// the same statement). `None` when the queue is full (nothing stored).
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
        let insert = self.dialect.sql(
            "INSERT INTO jobs (id, owner, model, key_id, state, progress, total, error, created, updated)
             SELECT $1, $2, $3, $4, 'queued', 0, $5, NULL, {now}, {now}
             WHERE (SELECT COUNT(*) FROM jobs WHERE state = 'queued') < $6",
        );
        let (total, max_queue) = (total as i64, max_queue as i64);
        let added =
            insert_with_blob!(self, (Blob::Input, &id, image), &insert, &id, owner, model, key_id, total, max_queue);
        Ok((added == 1).then_some(id))
    }

    /// Jobs in a state.
    pub async fn count(&self, state: JobState) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_pool!(self, p => {
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE state = $1").bind(state.as_str()).fetch_one(p).await?
        });
        Ok(n)
    }

    /// A job of `owner`.
    pub async fn job(&self, owner: i64, id: &str) -> Result<Option<JobRow>, StoreError> {
        let q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND owner = $2");
        let row: Option<JobTuple> =
            on_pool!(self, p => sqlx::query_as(&q).bind(id).bind(owner).fetch_optional(p).await?);
        Ok(row.map(job_of))
    }

    /// Claims the oldest job that is queued or whose lease (`lease` without a heartbeat) ran
    /// out, for `worker`, in one statement: two workers, in one process or several, never
    /// hold the same job.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<JobRow>, StoreError> {
        self.claim_preferring(worker, lease, &[], Duration::ZERO).await
    }

    /// [`Store::claim`], preferring the jobs of the keys `loaded` here (a worker then takes
    /// the jobs whose key its process has expanded, instead of loading every client's key in
    /// every process); a job that has waited longer than `patience` goes first whatever its
    /// key, so none waits more than that for the preference.
    pub async fn claim_preferring(
        &self,
        worker: &str,
        lease: Duration,
        loaded: &[String],
        patience: Duration,
    ) -> Result<Option<JobRow>, StoreError> {
        let q = self.dialect.sql(&format!(
            "UPDATE jobs SET state = 'running', progress = 0, worker = $1, attempts = attempts + 1, updated = {{now}}
             WHERE id = (SELECT id FROM jobs
                         WHERE state = 'queued' OR (state = 'running' AND updated < {{now}} - $2)
                         ORDER BY CASE WHEN created < {{now}} - $4 THEN 0
                                       WHEN {{find}}($3, ',' || key_id || ',') > 0 THEN 1
                                       ELSE 2 END,
                                  created, {{seq}}
                         LIMIT 1 {{skip_locked}})
             RETURNING {JOB_COLUMNS}"
        ));
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        // Key ids are hex: a comma-delimited list finds one as `,ID,`.
        let list = format!(",{},", loaded.join(","));
        let row: Option<JobTuple> = on_pool!(self, p => {
            sqlx::query_as(&q).bind(worker).bind(ms(lease)).bind(&list).bind(ms(patience)).fetch_optional(p).await?
        });
        Ok(row.map(job_of))
    }

    /// Records a running job's progress and renews `worker`'s lease on it; `false` when the
    /// job is no longer this worker's (deleted, or its lease ran out and another took it).
    pub async fn heartbeat(&self, id: &str, worker: &str, progress: usize) -> Result<bool, StoreError> {
        let q = self
            .dialect
            .sql("UPDATE jobs SET progress = $3, updated = {now} WHERE id = $1 AND worker = $2 AND state = 'running'");
        let n = on_pool!(self, p => {
            sqlx::query(&q).bind(id).bind(worker).bind(progress as i64).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Stores a job's result and marks it done, if `worker` still holds it; `false` otherwise
    /// (deleted meanwhile, or taken over: nothing is stored).
    pub async fn finish(&self, id: &str, worker: &str, result: Vec<u8>) -> Result<bool, StoreError> {
        let q = self.dialect.sql(
            "UPDATE jobs SET state = 'done', progress = total, error = NULL, updated = {now}
             WHERE id = $1 AND worker = $2 AND state = 'running'",
        );
        match &self.pool {
            Pool::Sqlite(p, data) => {
                // Under its own name: a worker that lost the job must not replace the result of
                // the one that has it.
                let name = format!("{id}.{worker}");
                Self::write_file(data, Blob::Result, &name, result).await?;
                let done = sqlx::query(&q).bind(id).bind(worker).execute(p).await?.rows_affected() == 1;
                if !done {
                    self.remove_files(&[(Blob::Result, &name)]).await;
                    return Ok(false);
                }
                let (from, to) = (blob_path(data, Blob::Result, &name), blob_path(data, Blob::Result, id));
                std::fs::rename(&from, &to).map_err(io(&to))?;
                self.remove_files(&[(Blob::Input, id)]).await;
                Ok(true)
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                if sqlx::query(&q).bind(id).bind(worker).execute(&mut *tx).await?.rows_affected() != 1 {
                    return Ok(false);
                }
                insert_blob(&mut tx, Blob::Result, id, &result).await?;
                delete_blobs(&mut tx, &[(Blob::Input, id)]).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    /// Marks a job failed with a message (if `worker` still holds it, or any job when
    /// `worker` is `None`).
    pub async fn fail(&self, id: &str, worker: Option<&str>, error: &str) -> Result<(), StoreError> {
        let q = self.dialect.sql(
            "UPDATE jobs SET state = 'failed', error = $2, updated = {now}
             WHERE id = $1 AND ($3 IS NULL OR worker = $3) AND state IN ('queued', 'running')",
        );
        let n = on_pool!(self, p => {
            sqlx::query(&q).bind(id).bind(error).bind(worker).execute(p).await?.rows_affected()
        });
        if n == 1 {
            if let Pool::Postgres(p) = &self.pool {
                sqlx::query("DELETE FROM blobs WHERE kind = $1 AND id = $2")
                    .bind(Blob::Input.dir())
                    .bind(id)
                    .execute(p)
                    .await?;
            }
            self.remove_files(&[(Blob::Input, id)]).await;
        }
        Ok(())
    }

    /// Deletes a job of `owner` with its image and result; whether it existed. A running job
    /// goes on, and its result is dropped when it ends.
    pub async fn delete_job(&self, owner: i64, id: &str) -> Result<bool, StoreError> {
        self.delete_owned(Table::Jobs, owner, id, &[(Blob::Input, id), (Blob::Result, id)]).await
    }

    /// Deletes the finished (done or failed) jobs last updated more than `age` ago, with
    /// their results; how many.
    pub async fn sweep(&self, age: Duration) -> Result<usize, StoreError> {
        let q =
            self.dialect.sql("SELECT id, owner FROM jobs WHERE state IN ('done', 'failed') AND updated < {now} - $1");
        let age_ms = age.as_millis().min(i64::MAX as u128) as i64;
        let old: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(&q).bind(age_ms).fetch_all(p).await?);
        let mut n = 0;
        for (id, owner) in old {
            n += usize::from(self.delete_job(owner, &id).await?);
        }
        Ok(n)
    }
}
