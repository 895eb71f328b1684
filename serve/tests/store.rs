//! The store on each database it runs on: SQLite in a data directory always, and PostgreSQL
//! when `FHEC_TEST_POSTGRES` names a server (`postgres://USER@HOST/DB` of a user who may
//! create databases; `.ci/run` starts Debian's PostgreSQL and sets it). Each test runs on a
//! database of its own, dropped at the end. No classification here: blobs are a few bytes.

use std::time::Duration;

use fhec_serve::store::{Blob, JobState, Location, MAX_ATTEMPTS, Store, StoreError};
use sqlx::Connection;

const MODEL: &str = "m";

/// A fresh place for test `tag` on each database; the PostgreSQL one is dropped by `drop_all`.
async fn places(tag: &str) -> Vec<Location> {
    let dir = std::env::temp_dir().join(format!("fhec-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut v = vec![Location::Dir(dir)];
    if let Ok(url) = std::env::var("FHEC_TEST_POSTGRES") {
        let db = format!("fhec_test_{tag}_{}", std::process::id());
        let mut c = sqlx::PgConnection::connect(&url).await.expect("FHEC_TEST_POSTGRES connects");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db}")).execute(&mut c).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
        let (base, _) = url.rsplit_once('/').expect("a URL ending in /DATABASE");
        v.push(Location::Postgres(format!("{base}/{db}")));
    } else {
        eprintln!("FHEC_TEST_POSTGRES is not set: the store is tested on SQLite only");
    }
    v
}

async fn drop_all(places: &[Location]) {
    for p in places {
        match p {
            Location::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Location::Postgres(url) => {
                let admin = std::env::var("FHEC_TEST_POSTGRES").unwrap();
                let db = url.rsplit_once('/').unwrap().1;
                let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut c).await.unwrap();
            }
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

/// Runs `test` on a fresh store at every place.
fn on_each(tag: &str, test: impl AsyncFn(&Location, &Store)) {
    block_on(async {
        let places = places(tag).await;
        for place in &places {
            let store = Store::open(place).await.unwrap_or_else(|e| panic!("{place}: {e}"));
            test(place, &store).await;
            store.close().await;
        }
        drop_all(&places).await;
    })
}

#[test]
fn a_job_is_claimed_once_and_again_only_when_its_lease_runs_out() {
    on_each("lease", async |place, store| {
        let lease = Duration::from_millis(1500);
        let alice = store.create_token("alice", false).await.unwrap();
        let owner = store.caller(&alice).await.unwrap().unwrap().id;
        let key = store.add_key(owner, MODEL, 7, vec![1u8; 16]).await.unwrap();
        let job = store.submit(owner, MODEL, &key, 320, vec![2u8; 16], 4).await.unwrap().unwrap();
        let first = store.claim("w1", lease).await.unwrap().unwrap();
        assert_eq!((first.id.as_str(), first.attempts), (job.as_str(), 1), "{place}");
        assert!(store.claim("w2", lease).await.unwrap().is_none(), "{place}: a held job is claimed once");
        // Heartbeats keep it.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(store.heartbeat(&job, "w1", 10).await.unwrap(), "{place}");
            assert!(store.claim("w2", lease).await.unwrap().is_none(), "{place}: a renewed lease holds");
        }
        assert_eq!(store.job(owner, &job).await.unwrap().unwrap().progress, 10);
        // w1 stops renewing (its process was killed): after the lease, w2 takes the job over.
        tokio::time::sleep(lease + Duration::from_millis(300)).await;
        let second = store.claim("w2", lease).await.unwrap().unwrap();
        assert_eq!((second.id.as_str(), second.attempts, second.progress), (job.as_str(), 2, 0), "{place}");
        // The lost worker can neither renew nor finish; the new one finishes.
        assert!(!store.heartbeat(&job, "w1", 20).await.unwrap(), "{place}");
        assert!(!store.finish(&job, "w1", vec![9u8; 8]).await.unwrap(), "{place}");
        assert_eq!(store.job(owner, &job).await.unwrap().unwrap().state, JobState::Running);
        assert!(store.finish(&job, "w2", vec![3u8; 8]).await.unwrap(), "{place}");
        let done = store.job(owner, &job).await.unwrap().unwrap();
        assert_eq!((done.state, done.progress), (JobState::Done, 320), "{place}");
        assert_eq!(store.read_blob(Blob::Result, &job).await.unwrap(), vec![3u8; 8], "{place}");
        assert!(store.read_blob(Blob::Input, &job).await.is_err(), "{place}: the image is removed once done");
        if let Location::Dir(d) = place {
            assert_eq!(
                std::fs::read_dir(d.join("blobs/results")).unwrap().count(),
                1,
                "the lost worker's result is gone"
            );
        }
    });
}

#[test]
fn the_queue_bound_ownership_and_attempts() {
    on_each("queue", async |place, store| {
        let lease = Duration::from_millis(200);
        let a = store.create_token("a", false).await.unwrap();
        let b = store.create_token("b", false).await.unwrap();
        let (a, b) = (store.caller(&a).await.unwrap().unwrap().id, store.caller(&b).await.unwrap().unwrap().id);
        let key = store.add_key(a, MODEL, 7, vec![1u8; 16]).await.unwrap();
        assert!(store.key(Some(b), &key).await.unwrap().is_none(), "{place}: b does not see a's key");
        assert!(!store.delete_key(b, &key).await.unwrap(), "{place}");
        let j1 = store.submit(a, MODEL, &key, 5, vec![2u8; 4], 2).await.unwrap().unwrap();
        let j2 = store.submit(a, MODEL, &key, 5, vec![2u8; 4], 2).await.unwrap().unwrap();
        assert!(store.submit(a, MODEL, &key, 5, vec![2u8; 4], 2).await.unwrap().is_none(), "{place}: full");
        assert!(store.job(b, &j1).await.unwrap().is_none(), "{place}: b does not see a's job");
        assert!(!store.delete_job(b, &j1).await.unwrap(), "{place}");
        // Oldest first.
        assert_eq!(store.claim("w", lease).await.unwrap().unwrap().id, j1, "{place}");
        assert_eq!(store.claim("w", lease).await.unwrap().unwrap().id, j2, "{place}");
        // A job whose worker keeps dying comes back with its attempts counted.
        let mut attempts = 2;
        while attempts <= MAX_ATTEMPTS {
            tokio::time::sleep(lease * 2).await;
            let again = store.claim("w", lease).await.unwrap().unwrap();
            assert!(again.id == j1 || again.id == j2);
            attempts = again.attempts;
        }
        store.fail(&j1, None, "gave up").await.unwrap();
        let failed = store.job(a, &j1).await.unwrap().unwrap();
        assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("gave up")), "{place}");
        assert_eq!(store.count(JobState::Failed).await.unwrap(), 1);
    });
}

#[test]
fn revoking_a_token_deletes_its_keys_and_jobs_and_the_sweep_old_results() {
    on_each("revoke", async |place, store| {
        let a = store.create_token("a", false).await.unwrap();
        let b = store.create_token("b", false).await.unwrap();
        assert!(matches!(store.create_token("a", false).await, Err(StoreError::TokenExists(_))));
        let (ida, idb) = (store.caller(&a).await.unwrap().unwrap().id, store.caller(&b).await.unwrap().unwrap().id);
        let ka = store.add_key(ida, MODEL, 7, vec![1u8; 16]).await.unwrap();
        let kb = store.add_key(idb, MODEL, 8, vec![1u8; 16]).await.unwrap();
        let ja = store.submit(ida, MODEL, &ka, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        let jb = store.submit(idb, MODEL, &kb, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        let listed = store.tokens().await.unwrap();
        assert!(listed.contains(&("a".to_string(), false, 1, 1)), "{place}: {listed:?}");

        assert!(store.revoke_token("a").await.unwrap(), "{place}");
        assert!(!store.revoke_token("a").await.unwrap(), "{place}: revoked once");
        assert!(store.caller(&a).await.unwrap().is_none(), "{place}: a revoked token does not authenticate");
        assert!(store.key(None, &ka).await.unwrap().is_none(), "{place}");
        assert!(store.job(ida, &ja).await.unwrap().is_none(), "{place}");
        assert!(store.read_blob(Blob::Key, &ka).await.is_err(), "{place}: the key's bytes are gone");
        assert!(store.read_blob(Blob::Input, &ja).await.is_err(), "{place}");
        assert!(matches!(store.add_key(ida, MODEL, 7, vec![1u8; 16]).await, Err(StoreError::Revoked)), "{place}");
        // b is untouched.
        assert!(store.key(Some(idb), &kb).await.unwrap().is_some(), "{place}");

        // The sweep deletes finished jobs past their age, not queued ones.
        let w = store.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(w.id, jb);
        assert!(store.finish(&jb, "w", vec![3u8; 4]).await.unwrap());
        let jq = store.submit(idb, MODEL, &kb, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        assert_eq!(store.sweep(Duration::from_secs(3600)).await.unwrap(), 0, "{place}: too young");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.sweep(Duration::from_millis(10)).await.unwrap(), 1, "{place}");
        assert!(store.job(idb, &jb).await.unwrap().is_none());
        assert!(store.read_blob(Blob::Result, &jb).await.is_err(), "{place}: the result is gone");
        assert_eq!(store.job(idb, &jq).await.unwrap().unwrap().state, JobState::Queued, "{place}");
    });
}

#[test]
fn a_place_of_another_schema_version_is_refused_by_name() {
    on_each("schema", async |place, store| {
        store.close().await;
        match place {
            Location::Dir(d) => {
                let url = format!("sqlite://{}", d.join("fhec.sqlite").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("UPDATE meta SET schema = 99").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Location::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("UPDATE meta SET schema = 99").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
        let e = Store::open(place).await.err().expect("refused");
        let m = e.to_string();
        assert!(m.contains("schema version 99") && m.contains("version 2"), "{m}");
        // Reopened for `on_each` to close.
        let _ = store;
    });
}

#[test]
fn postgresql_over_tls_when_the_server_offers_it() {
    let Ok(admin) = std::env::var("FHEC_TEST_POSTGRES") else {
        eprintln!("FHEC_TEST_POSTGRES is not set: TLS to PostgreSQL is not tested");
        return;
    };
    block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        let (ssl,): (String,) = sqlx::query_as("SHOW ssl").fetch_one(&mut c).await.unwrap();
        if ssl != "on" {
            eprintln!("the test server does not offer TLS: not tested");
            return;
        }
        let places = places("tls").await;
        let Location::Postgres(url) = &places[1] else { unreachable!() };
        let tls = format!("{url}?sslmode=require");
        // The connection the store makes is encrypted...
        let mut direct = sqlx::PgConnection::connect(&tls).await.unwrap();
        let (on,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut direct)
            .await
            .unwrap();
        assert!(on, "sslmode=require gives an encrypted session");
        direct.close().await.unwrap();
        // ...and the store works over it.
        let store = Store::open(&Location::Postgres(tls)).await.unwrap();
        let t = store.create_token("tls", false).await.unwrap();
        assert_eq!(store.caller(&t).await.unwrap().unwrap().name, "tls");
        store.close().await;
        drop_all(&places).await;
    });
}

#[test]
fn workers_prefer_the_jobs_of_keys_they_have_loaded_within_a_patience() {
    on_each("affinity", async |place, store| {
        let lease = Duration::from_secs(60);
        let a = store.create_token("a", false).await.unwrap();
        let a = store.caller(&a).await.unwrap().unwrap().id;
        let k1 = store.add_key(a, MODEL, 7, vec![1u8; 16]).await.unwrap();
        let k2 = store.add_key(a, MODEL, 7, vec![1u8; 16]).await.unwrap();
        let j1 = store.submit(a, MODEL, &k1, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        let j2 = store.submit(a, MODEL, &k2, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        let j3 = store.submit(a, MODEL, &k1, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        let patience = Duration::from_secs(60);
        // A worker with k2 loaded takes j2 before the older j1; then, with nothing of k2 left,
        // the oldest.
        let first = store.claim_preferring("w", lease, std::slice::from_ref(&k2), patience).await.unwrap().unwrap();
        assert_eq!(first.id, j2, "{place}");
        let next = store.claim_preferring("w", lease, std::slice::from_ref(&k2), patience).await.unwrap().unwrap();
        assert_eq!(next.id, j1, "{place}");
        // Past its patience a job goes first whatever the key.
        let j4 = store.submit(a, MODEL, &k2, 5, vec![2u8; 4], 8).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let short = Duration::from_millis(100);
        let old = store.claim_preferring("w", lease, std::slice::from_ref(&k2), short).await.unwrap().unwrap();
        assert_eq!(old.id, j3, "{place}: j3 waited longer than the patience");
        assert_eq!(store.claim("w", lease).await.unwrap().unwrap().id, j4, "{place}");
    });
}
