//! The workers: each claims the oldest queued job (or one whose lease ran out) in one atomic
//! statement, classifies it on a blocking thread with its key's loaded server, renews its
//! lease and records its progress every second, stores the result atomically and marks the
//! job done (or failed, with the reason).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fhec_runtime::app::Server;

use crate::State;
use crate::store::{Blob, JobRow, MAX_ATTEMPTS};

/// A worker's name in the database: the process and a random part, unique across processes
/// and machines sharing one database.
fn worker_name() -> String {
    let r: u64 = rand::random();
    format!("{}-{r:016x}", std::process::id())
}

/// A worker's loop, until the service stops.
pub async fn run(state: Arc<State>) {
    let me = worker_name();
    while !state.stopping.load(Ordering::SeqCst) {
        // Registered before the claim, so a job queued in between wakes us.
        let notified = state.queued.notified();
        let loaded = state.cache.ids();
        match state.store.claim_preferring(&me, state.config.lease, &loaded, state.config.key_affinity).await {
            Ok(Some(job)) if job.attempts > MAX_ATTEMPTS => {
                let why = format!(
                    "the job was interrupted {} times (its worker stopped while running it); not tried again",
                    job.attempts - 1
                );
                state.metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = state.store.fail(&job.id, Some(&me), &why).await {
                    eprintln!("fhec serve: cannot record job {}: {e}", job.id);
                }
            }
            Ok(Some(job)) => run_job(&state, &me, job).await,
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
            }
            Err(e) => {
                eprintln!("fhec serve: cannot claim a job: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The loaded server of a job's key (loading it if it is not).
pub async fn server_for(state: &Arc<State>, job: &JobRow) -> Result<Arc<Server>, String> {
    let model =
        state.model(&job.model).ok_or_else(|| format!("the model {:?} is no longer served", job.model))?.clone();
    match state.store.key(None, &job.key_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("the evaluation key {} was deleted", job.key_id)),
        Err(e) => return Err(e.to_string()),
    }
    let (state2, key_id) = (state.clone(), job.key_id.clone());
    tokio::task::spawn_blocking(move || {
        state2.cache.get_or_load(&key_id, model.loaded_key_bytes, || {
            let key = tokio::runtime::Handle::current()
                .block_on(state2.store.read_blob(Blob::Key, &key_id))
                .map_err(|e| format!("cannot read the evaluation key {key_id}: {e}"))?;
            Server::new(&model.artifact, &key).map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| format!("loading the key stopped: {e}"))?
}

async fn run_job(state: &Arc<State>, me: &str, job: JobRow) {
    let claimed = std::time::Instant::now();
    let outcome = classify(state, me, &job).await;
    let metrics = &state.metrics;
    let recorded = match outcome {
        Ok(result) => match state.store.finish(&job.id, me, result).await {
            Ok(true) => {
                metrics.jobs_done.fetch_add(1, Ordering::Relaxed);
                metrics.job_finished(&job.model, job.created, claimed);
                Ok(())
            }
            // Deleted meanwhile, or taken over by another worker after a lost lease.
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        },
        Err(message) => {
            metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
            state.store.fail(&job.id, Some(me), &message).await
        }
    };
    if let Err(e) = recorded {
        eprintln!("fhec serve: cannot record job {}: {e}", job.id);
    }
}

/// Classifies a job's image, recording progress; the encrypted result or why it failed.
async fn classify(state: &Arc<State>, me: &str, job: &JobRow) -> Result<Vec<u8>, String> {
    let server = server_for(state, job).await?;
    let image = state.store.read_blob(Blob::Input, &job.id).await.map_err(|e| format!("cannot read the image: {e}"))?;
    let progress = Arc::new(AtomicUsize::new(0));
    let (p, s) = (progress.clone(), server.clone());
    let mut task = tokio::task::spawn_blocking(move || s.classify_with_progress(&image, &p));
    let mut reported = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            r = &mut task => break r,
            _ = tick.tick() => {
                let n = progress.load(Ordering::Relaxed);
                state.metrics.bootstraps_done.fetch_add(n.saturating_sub(reported) as u64, Ordering::Relaxed);
                reported = n;
                // Every tick, changed or not: it renews the lease.
                if let Err(e) = state.store.heartbeat(&job.id, me, n).await {
                    eprintln!("fhec serve: cannot renew the lease of job {}: {e}", job.id);
                }
            }
        }
    };
    let n = progress.load(Ordering::Relaxed);
    state.metrics.bootstraps_done.fetch_add(n.saturating_sub(reported) as u64, Ordering::Relaxed);
    match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the evaluation stopped: {e}")),
    }
}

/// Deletes finished jobs older than `age` with their results, every minute, until the
/// service stops.
pub async fn sweep(state: Arc<State>, age: Duration) {
    while !state.stopping.load(Ordering::SeqCst) {
        match state.store.sweep(age).await {
            Ok(0) => {}
            Ok(n) => eprintln!("fhec serve: deleted {n} finished jobs older than {} s", age.as_secs()),
            Err(e) => eprintln!("fhec serve: cannot delete old jobs: {e}"),
        }
        for _ in 0..60 {
            if state.stopping.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
