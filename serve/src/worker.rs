//! The workers: each claims the oldest queued job (one atomic statement), classifies it on a
//! blocking thread with its key's loaded server, records its progress about every second,
//! stores the result atomically and marks the job done (or failed, with the reason).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fhec_runtime::app::Server;

use crate::State;
use crate::store::{Blob, JobRow};

/// A worker's loop, until the service stops.
pub async fn run(state: Arc<State>) {
    while !state.stopping.load(Ordering::SeqCst) {
        // Registered before the claim, so a job queued in between wakes us.
        let notified = state.queued.notified();
        match state.store.claim().await {
            Ok(Some(job)) => run_job(&state, job).await,
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
            let path = state2.store.blob_path(Blob::Key, &key_id);
            let key = std::fs::read(&path).map_err(|e| format!("cannot read the evaluation key {key_id}: {e}"))?;
            Server::new(&model.artifact, &key).map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| format!("loading the key stopped: {e}"))?
}

async fn run_job(state: &Arc<State>, job: JobRow) {
    let outcome = classify(state, &job).await;
    let metrics = &state.metrics;
    let recorded = match outcome {
        Ok(result) => match state.store.finish(&job.id, result).await {
            Ok(_) => {
                metrics.jobs_done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        },
        Err(message) => {
            metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
            state.store.fail(&job.id, &message).await
        }
    };
    if let Err(e) = recorded {
        eprintln!("fhec serve: cannot record job {}: {e}", job.id);
    }
}

/// Classifies a job's image, recording progress; the encrypted result or why it failed.
async fn classify(state: &Arc<State>, job: &JobRow) -> Result<Vec<u8>, String> {
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
                if n != reported {
                    state.metrics.bootstraps_done.fetch_add((n - reported) as u64, Ordering::Relaxed);
                    reported = n;
                    let _ = state.store.set_progress(&job.id, n).await;
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
