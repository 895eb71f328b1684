//! `fhec serve` as an operator runs it: two `fhec serve` processes sharing one PostgreSQL
//! database (the queue, the key records and the blobs), both taking jobs, and a process killed
//! in the middle of a job whose job another process then completes. Runs when
//! `FHEC_TEST_POSTGRES` names a server (a user who may create databases; `.ci/run` starts
//! Debian's PostgreSQL and sets it); the test makes a database of its own and drops it.
//!
//! The bundled `seedq_mnist` compiled as `CompileOptions::seed_network` compiles it (6-bit tables, approximate
//! rounding, 128-bit parameters); five images classified in all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fhec_ir::artifact::Artifact;
use fhec_runtime::app::Client;
use fhec_runtime::dataset::{DatasetKind, bundled_sample};
use fhec_runtime::sim;
use fhec_serve::RemoteClient;
use sqlx::Connection;

const MODEL: &str = "seedq_mnist";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fhec(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fhec"));
    c.args(args).current_dir(root()).env_remove("FHEC_TOKEN").env_remove("FHEC_URL");
    c.envs(envs.iter().copied()).output().expect("run fhec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh database on the test server, dropped with the value.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin: &str) -> Database {
        let name = format!("fhec_cli_{}", std::process::id());
        run_sql(admin, &[format!("DROP DATABASE IF EXISTS {name}"), format!("CREATE DATABASE {name}")]);
        let (base, _) = admin.rsplit_once('/').expect("a URL ending in /DATABASE");
        Database { admin: admin.into(), url: format!("{base}/{name}"), name }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // The killed servers' sessions may still be closing: retry for a while, and never
        // panic here (a leftover test database is dropped by the next run's `create`).
        let drop = [format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)];
        for attempt in 1..=10 {
            match try_sql(&self.admin, &drop) {
                Ok(()) => return,
                Err(e) if attempt == 10 => eprintln!("cannot drop the test database: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

fn try_sql(url: &str, statements: &[String]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await.map_err(|e| format!("FHEC_TEST_POSTGRES: {e}"))?;
        for s in statements {
            sqlx::query(s).execute(&mut c).await.map_err(|e| format!("{s}: {e}"))?;
        }
        Ok(())
    })
}

fn run_sql(url: &str, statements: &[String]) {
    try_sql(url, statements).unwrap_or_else(|e| panic!("{e}"));
}

/// A `fhec serve` process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(artifact: &Path, database: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhec"))
            .args(["serve", artifact.to_str().unwrap(), "--listen", "127.0.0.1:0", "--lease-seconds", "3"])
            .env("FHEC_DATABASE_URL", database)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fhec serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("fhec serve printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("serving on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        assert!(!url.contains("fhec:fhec"), "the database password is not printed: {url}");
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, url }
    }

    /// A counter of its `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let body = ureq::get(format!("{}/metrics", self.url)).call().unwrap().into_body().read_to_string().unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(client: &RemoteClient, job: &str) -> Vec<u8> {
    let t = Instant::now();
    client.wait(job, |_| assert!(t.elapsed() < Duration::from_secs(600), "job {job} never finished")).unwrap()
}

#[test]
fn two_serve_processes_share_postgresql_and_a_killed_ones_job_completes() {
    let Ok(admin) = std::env::var("FHEC_TEST_POSTGRES") else {
        eprintln!("FHEC_TEST_POSTGRES is not set: the PostgreSQL path of fhec serve is not tested");
        return;
    };
    let db = Database::create(&admin);
    let dir = std::env::temp_dir().join(format!("fhec-cli-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let artifact = dir.join(format!("{MODEL}.fhec"));
    let o = fhec(
        &[
            "build",
            "examples/models/seedq_mnist.onnx",
            "-o",
            artifact.to_str().unwrap(),
            "--max-table-bits",
            "6",
            "--rounding",
            "approximate",
            "--no-fit",
            "--calib-dataset",
            "mnist",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let circuit = Artifact::from_bytes(&std::fs::read(&artifact).unwrap()).unwrap().circuit;
    let sample = bundled_sample(DatasetKind::Mnist);
    let expected = |i: usize| sim::classify(&circuit, sample.pixels(i)).unwrap().0;

    // The admin command on the database; the URL from the environment.
    let o = fhec(&["serve-token", "alice"], &[("FHEC_DATABASE_URL", &db.url)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let token = text(&o.stdout).trim().to_string();
    let o = fhec(&["serve-token", "--database", "/not/a/url", "bob"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--database takes a postgres:// URL"), "{}", text(&o.stderr));

    let a = Server::start(&artifact, &db.url);
    let b = Server::start(&artifact, &db.url);
    // Keys made here, the evaluation key uploaded through a; b finds it in the database.
    let keys = dir.join("keys");
    let o = fhec(
        &["remote", "keygen", MODEL, "--out", keys.to_str().unwrap()],
        &[("FHEC_URL", &a.url), ("FHEC_TOKEN", &token)],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(keys.join("remote.json")).unwrap()).unwrap();
    let key = record["key"].as_str().unwrap().to_string();
    let client = Client::with_key(
        &std::fs::read(keys.join("model.client.fhec")).unwrap(),
        &std::fs::read(keys.join("client.key")).unwrap(),
    )
    .unwrap();
    let (via_a, via_b) = (RemoteClient::new(&a.url, &token), RemoteClient::new(&b.url, &token));

    // Four jobs submitted through both; both processes take jobs; results as simulated.
    let jobs: Vec<(usize, String)> = (0..4)
        .map(|i| {
            let image = client.encrypt(sample.pixels(i)).unwrap();
            let via = if i % 2 == 0 { &via_a } else { &via_b };
            (i, via.submit(MODEL, &key, &image).unwrap())
        })
        .collect();
    for (i, job) in &jobs {
        // Any process answers for any job.
        let via = if i % 2 == 0 { &via_b } else { &via_a };
        let class = client.decrypt(&wait(via, job)).unwrap().class;
        assert_eq!(class, expected(*i), "image {i}");
    }
    let (done_a, done_b) = (a.metric("fhec_jobs_done_total"), b.metric("fhec_jobs_done_total"));
    assert_eq!(done_a + done_b, 4);
    assert!(done_a >= 1 && done_b >= 1, "both processes take jobs: {done_a} and {done_b}");

    // b stops; a takes the next job and is killed in the middle of it; a new process
    // completes it once a's lease has run out.
    drop(b);
    let image = client.encrypt(sample.pixels(4)).unwrap();
    let job = via_a.submit(MODEL, &key, &image).unwrap();
    let t = Instant::now();
    loop {
        let s = via_a.status(&job).unwrap();
        if s.state == "running" && s.progress > 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "the job never started: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(a);
    let c = Server::start(&artifact, &db.url);
    let via_c = RemoteClient::new(&c.url, &token);
    assert_eq!(client.decrypt(&wait(&via_c, &job)).unwrap().class, expected(4), "image 4");
    assert_eq!(c.metric("fhec_jobs_done_total"), 1);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
