//! `fhec-bench serve-load`: `fhec serve` under load on loopback. N clients (each with its own
//! token and key pair) each classify M images one after the other (submit, poll, fetch,
//! decrypt), all clients at once; throughput in images per minute beside the single-process
//! baselines measured in the same run (`fhec run` once per image, as a script would call it,
//! and the runtime's `Server` with its key loaded once), p50/p99 latency from submission to
//! the result, and the servers' peak memory. Configurations: one process on SQLite, and, given
//! a PostgreSQL URL, one and two processes sharing a database (the clients spread over the
//! processes as a load balancer would). Every result is decrypted and checked against the
//! simulation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fhec_compiler::quantize::Rounding;
use fhec_driver::progress::size;
use fhec_driver::{CompileOptions, compile_model};
use fhec_ir::circuit::Circuit;
use fhec_runtime::app::{Client, Server};
use fhec_runtime::dataset::{DatasetKind, bundled_sample};
use fhec_runtime::sim;
use fhec_serve::RemoteClient;

use crate::common::{cpu_model, machine_line, save_section};

/// What `serve-load` runs.
pub struct ServeLoadRun<'a> {
    /// The ONNX model (an MNIST model), compiled as the service serves the seed network (`CompileOptions::seed_network`).
    pub model: &'a Path,
    /// Concurrent clients.
    pub clients: usize,
    /// Images per client.
    pub images: usize,
    /// Images of each single-process baseline.
    pub baseline_images: usize,
    /// A PostgreSQL URL of a user who may create databases (a fresh one per configuration).
    pub database: Option<&'a str>,
    /// The `fhec` binary.
    pub fhec: &'a Path,
    /// The markdown file whose `serve` section is replaced.
    pub out: &'a Path,
}

/// The `fhec` binary beside this one (`cargo build` puts both in one directory).
pub fn default_fhec() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("fhec")))
        .unwrap_or_else(|| PathBuf::from("fhec"))
}

/// A client: its key pair, its uploaded key's id and its encrypted images.
struct LoadClient {
    client: Client,
    evaluation_key: Vec<u8>,
    images: Vec<(usize, Vec<u8>)>,
}

/// One row of the table.
struct Row {
    name: String,
    images: usize,
    wall_s: f64,
    latencies: Vec<f64>,
    peak_rss: Option<u64>,
    correct: usize,
    note: String,
}

impl Row {
    fn per_minute(&self) -> f64 {
        60.0 * self.images as f64 / self.wall_s
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident memory (`VmHWM`) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Runs a command to its end while sampling its peak memory; its wall time and peak.
fn run_measured(cmd: &mut Command) -> Result<(f64, Option<u64>)> {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("cannot start fhec run")?;
    let mut peak = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut err = String::new();
                use std::io::Read;
                child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                bail!("fhec run failed: {err}");
            }
            return Ok((t.elapsed().as_secs_f64(), peak));
        }
        peak = peak.max(peak_rss(child.id()));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fhec serve` process; killed when dropped.
struct ServeProcess {
    child: Child,
    url: String,
}

impl ServeProcess {
    fn start(fhec: &Path, artifact: &Path, store: &[&str]) -> Result<ServeProcess> {
        let mut child = Command::new(fhec)
            .arg("serve")
            .arg(artifact)
            .args(["--listen", "127.0.0.1:0", "--max-queue", "1000"])
            .args(store)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} serve", fhec.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let url = loop {
            let Some(line) = lines.next() else { bail!("fhec serve stopped before listening") };
            if let Some(rest) = line?.strip_prefix("serving on ") {
                break rest.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Ok(ServeProcess { child, url })
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates database `name` on the server of `admin` (dropping one of that name first) and
/// returns its URL; with `drop_only`, drops it.
fn fresh_database(admin: &str, name: &str, drop_only: bool) -> Result<String> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(admin).await.with_context(|| "cannot connect to --database")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await?;
        if !drop_only {
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await?;
        }
        anyhow::Ok(())
    })?;
    let (base, _) = admin.rsplit_once('/').context("--database must end in /DATABASE")?;
    Ok(format!("{base}/{name}"))
}

/// One service configuration: tokens, `processes` servers, keys uploaded, then every client's
/// images classified concurrently.
fn run_service(
    run: &ServeLoadRun,
    name: &str,
    store: &[&str],
    processes: usize,
    artifact: &Path,
    model: &str,
    clients: &[LoadClient],
    expected: &[usize],
) -> Result<Row> {
    println!("== {name} ==");
    let tokens = (0..clients.len())
        .map(|c| {
            let o = Command::new(run.fhec).arg("serve-token").args(store).arg(format!("client{c}")).output()?;
            if !o.status.success() {
                bail!("fhec serve-token failed: {}", String::from_utf8_lossy(&o.stderr));
            }
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    // The cores shared out between the processes, so that they do not oversubscribe them.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / processes).max(1).to_string();
    let mut args = store.to_vec();
    if processes > 1 {
        args.extend(["--threads", &threads]);
    }
    let servers = (0..processes).map(|_| ServeProcess::start(run.fhec, artifact, &args)).collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    let remotes: Vec<(RemoteClient, String)> = clients
        .iter()
        .enumerate()
        .map(|(c, lc)| {
            let remote = RemoteClient::new(&servers[c % processes].url, &tokens[c]);
            let key = remote.upload_key(model, &lc.evaluation_key)?;
            Ok((remote, key))
        })
        .collect::<Result<Vec<_>>>()?;
    println!("{} evaluation keys uploaded and checked in {:.1} s", clients.len(), t.elapsed().as_secs_f64());

    let latencies = Mutex::new(Vec::new());
    let correct = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let peak = Mutex::new(vec![0u64; processes]);
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        // Peak memory of each server, sampled while the clients run (VmHWM is a high-water
        // mark, but the process is killed at the end).
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (i, srv) in servers.iter().enumerate() {
                    if let Some(b) = peak_rss(srv.child.id()) {
                        let mut p = peak.lock().unwrap();
                        p[i] = p[i].max(b);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let handles: Vec<_> = clients
            .iter()
            .zip(&remotes)
            .map(|(lc, (remote, key))| {
                let (latencies, correct) = (&latencies, &correct);
                s.spawn(move || -> Result<()> {
                    for (i, image) in &lc.images {
                        let t = Instant::now();
                        let job = remote.submit(model, key, image)?;
                        let result = remote.wait(&job, |_| {})?;
                        latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                        let _ = remote.delete_job(&job);
                        if lc.client.decrypt(&result)?.class == expected[*i] {
                            correct.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let outcome = handles.into_iter().try_for_each(|h| h.join().expect("a client thread panicked"));
        stop.store(true, Ordering::Relaxed);
        outcome
    })?;
    let wall_s = t.elapsed().as_secs_f64();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(f64::total_cmp);
    let peak: u64 = peak.into_inner().unwrap().iter().sum();
    let row = Row {
        name: name.into(),
        images: latencies.len(),
        wall_s,
        latencies,
        peak_rss: Some(peak),
        correct: correct.load(Ordering::Relaxed) as usize,
        note: if processes > 1 {
            format!(
                "`--threads {threads}` each; a worker prefers the jobs of keys its process loaded, but an idle one takes any job, so keys spread"
            )
        } else {
            format!("{} keys loaded", clients.len())
        },
    };
    println!("{:.2} images/min over {:.1} s", row.per_minute(), wall_s);
    Ok(row)
}

/// Runs the benchmark and writes its section.
pub fn bench_serve_load(run: &ServeLoadRun) -> Result<()> {
    if !run.fhec.is_file() {
        bail!(
            "{} not found: build the CLI beside fhec-bench (`cargo build --workspace --bins`) or give --fhec",
            run.fhec.display()
        );
    }
    let uptime_before = machine_line();
    let dir = std::env::temp_dir().join(format!("fhec-serve-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let model = run.model.file_stem().and_then(|s| s.to_str()).context("a model file name")?.to_string();
    let options = CompileOptions::seed_network(Rounding::Approximate);
    let (_, art) = compile_model(run.model, &options)?;
    let setup = art.fhe.as_ref().context("no 128-bit parameters")?;
    let (bootstraps, security) = (art.circuit.bootstrap_stats().total(), setup.security_bits);
    let artifact = dir.join(format!("{model}.fhec"));
    std::fs::write(&artifact, art.to_bytes())?;
    let part = art.client_part()?.to_bytes();
    let circuit: Circuit = art.circuit.clone();
    let sample = bundled_sample(DatasetKind::Mnist);
    let used = (run.clients * run.images).min(sample.len());
    let expected: Vec<usize> =
        (0..used).map(|i| sim::classify(&circuit, sample.pixels(i)).map_or(usize::MAX, |r| r.0)).collect();

    let t = Instant::now();
    let clients = (0..run.clients)
        .map(|c| {
            let client = Client::new(&part)?;
            let evaluation_key = client.evaluation_key();
            let images = (0..run.images)
                .map(|k| {
                    let i = (c * run.images + k) % used;
                    Ok((i, client.encrypt(sample.pixels(i))?))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(LoadClient { client, evaluation_key, images })
        })
        .collect::<Result<Vec<_>>>()?;
    println!(
        "{} clients: keys generated and {} images encrypted in {:.1} s (evaluation key {})",
        run.clients,
        run.clients * run.images,
        t.elapsed().as_secs_f64(),
        size(clients[0].evaluation_key.len())
    );

    let mut rows = Vec::new();
    // Baseline 1: `fhec run` once per image (a key loaded and expanded per call).
    // The first images of the clients in order, each with its client's key.
    let baseline: Vec<(&LoadClient, usize, &Vec<u8>)> = clients
        .iter()
        .flat_map(|c| c.images.iter().map(move |(i, img)| (c, *i, img)))
        .take(run.baseline_images.max(1))
        .collect();
    let b = baseline.len();
    let mut times = Vec::new();
    let mut peak = None;
    let mut correct = 0;
    println!("== fhec run, once per image ==");
    for &(lc, i, image) in &baseline {
        let key_file = dir.join(format!("server{i}.key"));
        std::fs::write(&key_file, &lc.evaluation_key)?;
        let (input, output) = (dir.join(format!("img{i}.ct")), dir.join(format!("res{i}.ct")));
        std::fs::write(&input, image)?;
        let _ = std::fs::remove_file(&output);
        let (s, p) = run_measured(
            Command::new(run.fhec)
                .arg("run")
                .arg(&artifact)
                .arg("--server-key")
                .arg(&key_file)
                .arg("--input")
                .arg(&input)
                .arg("-o")
                .arg(&output),
        )?;
        times.push(s);
        peak = peak.max(p);
        if lc.client.decrypt(&std::fs::read(&output)?)?.class == expected[i] {
            correct += 1;
        }
    }
    let wall: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    println!("{b} images in {wall:.1} s");
    rows.push(Row {
        name: "`fhec run`, one call per image (baseline)".into(),
        images: b,
        wall_s: wall,
        latencies: times,
        peak_rss: peak,
        correct,
        note: "key read and expanded at every call".into(),
    });
    // Baseline 2: the runtime's server in this process, its key expanded once.
    println!("== runtime Server, key loaded once ==");
    let bytes = std::fs::read(&artifact)?;
    let (mut load_s, mut times, mut correct) = (0.0, Vec::new(), 0);
    for lc in clients.iter().filter(|c| baseline.iter().any(|b| std::ptr::eq(b.0, *c))) {
        let t = Instant::now();
        let server = Server::new(&bytes, &lc.evaluation_key)?;
        load_s += t.elapsed().as_secs_f64();
        for &(_, i, image) in baseline.iter().filter(|b| std::ptr::eq(b.0, lc)) {
            let t = Instant::now();
            let r = server.classify(image)?;
            times.push(t.elapsed().as_secs_f64());
            if lc.client.decrypt(&r)?.class == expected[i] {
                correct += 1;
            }
        }
    }
    let wall: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    println!("{b} images in {wall:.1} s (key expanded in {load_s:.1} s)");
    rows.push(Row {
        name: "runtime `Server` in one process, one image at a time (baseline)".into(),
        images: b,
        wall_s: wall,
        latencies: times,
        peak_rss: None,
        correct,
        note: format!("each key expanded once ({load_s:.1} s in all, not counted)"),
    });

    let data = dir.join("data");
    let data_arg = data.to_string_lossy().to_string();
    rows.push(run_service(
        run,
        "`fhec serve`, 1 process, SQLite",
        &["--data", &data_arg],
        1,
        &artifact,
        &model,
        &clients,
        &expected,
    )?);
    if let Some(admin) = run.database {
        for processes in [1, 2] {
            let db = format!("fhec_load_{}_{processes}", std::process::id());
            let url = fresh_database(admin, &db, false)?;
            let name =
                format!("`fhec serve`, {processes} process{}, one PostgreSQL", if processes > 1 { "es" } else { "" });
            let row = run_service(run, &name, &["--database", &url], processes, &artifact, &model, &clients, &expected);
            fresh_database(admin, &db, true)?;
            rows.push(row?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let base = rows[0].per_minute();
    let mut body = format!(
        "## Serve: `fhec serve` under load, beside `fhec run`\n\nMeasured by `fhec-bench serve-load` on {} ({}; at the start: {uptime_before}). Model: `{model}` compiled as `fhec demo` compiles it ({bootstraps} bootstraps, {security:.0}-bit parameters). {} clients, each with its own token and key pair, classify {} images each one after the other (submit, poll every 0.5 s, fetch, decrypt), all clients at once; latency is from submission to the result received; every result is decrypted and compared with the simulation. Memory is the servers' peak resident set (summed over processes). Everything on loopback, on this one machine.\n\n",
        cpu_model(),
        machine_line(),
        run.clients,
        run.images
    );
    body += "| configuration | images | correct | images/min | vs `fhec run` | p50 latency | p99 latency | peak memory | note |\n";
    body += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &rows {
        body += &format!(
            "| {} | {} | {}/{} | {:.2} | {:.2}x | {:.1} s | {:.1} s | {} | {} |\n",
            r.name,
            r.images,
            r.correct,
            r.images,
            r.per_minute(),
            r.per_minute() / base,
            percentile(&r.latencies, 50.0),
            percentile(&r.latencies, 99.0),
            r.peak_rss.map_or("—".into(), |b| size(b as usize)),
            r.note
        );
    }
    body += "\nThe single-process baselines run one image at a time with all cores; the service's clients wait for each other's jobs (one worker, one job at a time on every core), so its latency is the queue's and its throughput is what to compare. On one machine a second process adds no cores: the two-process row measures the cost of sharing one queue and of each process loading the keys of the jobs it takes, not the gain of scaling out, which needs a second machine.\n\n";
    print!("{body}");
    save_section(run.out, "# fhec benchmarks", "serve", &body)?;
    println!("wrote the serve section of {}", run.out.display());
    Ok(())
}
