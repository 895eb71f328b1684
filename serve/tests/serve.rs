//! `fhec serve` against a real service over loopback (in-process, on its own tokio runtime
//! per test): the bundled `seedq_mnist` compiled as `CompileOptions::seed_network` compiles it (6-bit tables,
//! approximate rounding, 128-bit parameters), keys generated once, three images classified in
//! all (end to end through the job API, the synchronous endpoint, and a job queued before a
//! restart); the rest (tokens, ownership, bad bodies, the queue bound, a cut upload, the rate
//! limits) runs no classification. The end-to-end test also reads the latency histograms of
//! `/metrics` after its first job.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fhec_compiler::quantize::Rounding;
use fhec_driver::{CompileOptions, compile_model};
use fhec_ir::circuit::Circuit;
use fhec_runtime::app::Client;
use fhec_runtime::dataset::{DatasetKind, bundled_sample};
use fhec_runtime::sim;
use fhec_serve::store::JobState;
use fhec_serve::{Config, Model, RemoteClient, Running, Store};

const MODEL: &str = "seedq_mnist";

struct Fixture {
    artifact: Vec<u8>,
    circuit: Circuit,
    client: Client,
    evaluation_key: Vec<u8>,
}

/// The model compiled once and one key pair, shared by every test.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/seedq_mnist.onnx");
        let options = CompileOptions::seed_network(Rounding::Approximate);
        let (_, art) = compile_model(&path, &options).expect("seedq_mnist compiles");
        let setup = art.fhe.as_ref().expect("128-bit parameters");
        assert!(setup.security_bits >= 128.0);
        let artifact = art.to_bytes();
        let client = Client::new(&art.client_part().unwrap().to_bytes()).unwrap();
        let evaluation_key = client.evaluation_key();
        Fixture { artifact, circuit: art.circuit, client, evaluation_key }
    })
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A service on a free loopback port over `data`, on its own runtime.
struct Service {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
}

impl Service {
    fn start(data: &Path, workers: usize, max_queue: usize) -> Service {
        Service::start_with(Config { workers, max_queue, ..Config::new(data) })
    }

    /// A service with `config` (its address replaced by a free loopback port).
    fn start_with(config: Config) -> Service {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..config };
        let model = Model::from_bytes(MODEL, fixture().artifact.clone()).unwrap();
        let running = rt.block_on(fhec_serve::start(config, vec![model])).unwrap();
        Service { rt, running: Some(running) }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn url(&self) -> String {
        format!("http://{}", self.running().addr)
    }

    fn store(&self) -> &Store {
        &self.running().state.store
    }

    /// A new client token named `name`.
    fn token(&self, name: &str) -> String {
        self.rt.block_on(self.store().create_token(name, false)).unwrap()
    }

    /// A client with a new token named `name`.
    fn client(&self, name: &str) -> RemoteClient {
        RemoteClient::new(&self.url(), &self.token(name))
    }

    fn stop(mut self) {
        let running = self.running.take().unwrap();
        self.rt.block_on(running.stop());
    }
}

/// One raw HTTP/1.1 request (`Connection: close`); the status and the body.
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let (status, _, body) = raw_with_headers(addr, head, body);
    (status, body)
}

/// [`raw`], with the response's headers (names in lower case).
fn raw_with_headers(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn get_metrics(addr: SocketAddr) -> String {
    let (status, body) = raw(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(status, 200, "{body}");
    body
}

/// One histogram series of a Prometheus text exposition: its buckets (upper bound,
/// cumulative count), sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: Option<f64>,
    count: Option<u64>,
}

/// Histogram series by name and labels (in order, `le` left out).
type Histograms = BTreeMap<(String, Vec<(String, String)>), Histogram>;

/// `name{labels} value` split up: the name, the labels (in order) and the value.
fn sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_string(), vec![], value.to_string());
    };
    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
    let mut out = vec![];
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        // The value runs to the first unescaped quote.
        let mut value = String::new();
        let mut chars = v.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c }).unwrap()),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unclosed label value in {line:?}"),
            }
        };
        out.push((k.to_string(), value));
        rest = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
    }
    (name.to_string(), out, value.to_string())
}

/// The histograms of a `/metrics` text, by name and labels (`le` left out), each checked: a
/// `# TYPE NAME histogram` line, buckets in increasing order of bound with counts that never
/// decrease, the last bound `+Inf` with the series' count, and a sum.
fn histograms(text: &str) -> Histograms {
    let types: BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    let mut out: Histograms = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, mut labels, value) = sample(line);
        let (base, part) = match name.rsplit_once('_') {
            Some((base, part @ ("bucket" | "sum" | "count"))) if types.get(base) == Some(&"histogram") => (base, part),
            _ => continue,
        };
        let le = labels.iter().position(|(k, _)| k == "le").map(|i| labels.remove(i).1);
        let h = out.entry((base.to_string(), labels)).or_default();
        match part {
            "bucket" => {
                let le = le.unwrap_or_else(|| panic!("a bucket without le: {line}"));
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
                h.buckets.push((bound, value.parse().unwrap()));
            }
            "sum" => h.sum = Some(value.parse().unwrap()),
            _ => h.count = Some(value.parse().unwrap()),
        }
    }
    for (key, h) in &out {
        assert!(h.buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{key:?}: {h:?}");
        assert_eq!(h.buckets.last().map(|b| b.0), Some(f64::INFINITY), "{key:?}: {h:?}");
        assert_eq!(h.buckets.last().map(|b| b.1), h.count, "{key:?}: {h:?}");
        assert!(h.sum.is_some_and(|s| s >= 0.0), "{key:?}: {h:?}");
    }
    out
}

/// The series `name{labels}` of checked histograms.
fn series<'a>(all: &'a Histograms, name: &str, labels: &[(&str, &str)]) -> Option<&'a Histogram> {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.get(&(name.to_string(), labels))
}

/// Checks that one observation of `h` lies in its first bucket with a count of 1, as its sum
/// says.
fn one_observation(h: &Histogram) {
    assert_eq!(h.count, Some(1), "{h:?}");
    let sum = h.sum.unwrap();
    let i = h.buckets.iter().position(|b| b.1 == 1).unwrap();
    let below = if i == 0 { 0.0 } else { h.buckets[i - 1].0 };
    assert!(below < sum && sum <= h.buckets[i].0, "{sum} not in its bucket: {h:?}");
}

fn error_of(e: fhec_serve::RemoteError) -> (u16, String) {
    let status = e.status().unwrap_or_else(|| panic!("an HTTP error, not {e}"));
    (status, e.to_string())
}

fn class_of_simulation(i: usize) -> usize {
    sim::classify(&fixture().circuit, bundled_sample(DatasetKind::Mnist).pixels(i)).unwrap().0
}

fn encrypted(i: usize) -> Vec<u8> {
    fixture().client.encrypt(bundled_sample(DatasetKind::Mnist).pixels(i)).unwrap()
}

#[test]
fn end_to_end_upload_submit_poll_fetch_decrypt() {
    let f = fixture();
    let data = data_dir("e2e");
    let service = Service::start(&data, 1, 8);
    assert!(service.running().admin_token.as_deref().is_some_and(|t| t.starts_with("fhec_")));
    let alice = service.client("alice");

    let models = alice.models().unwrap();
    assert_eq!(models.len(), 1);
    let bootstraps = fhec_ir::artifact::Artifact::from_bytes(&f.artifact).unwrap().circuit.bootstrap_stats().total();
    assert_eq!((models[0].name.as_str(), models[0].bootstraps), (MODEL, bootstraps));
    assert_eq!(models[0].key_bytes, f.evaluation_key.len());
    // The client part is what `fhec build` writes for clients: no weights.
    let part = alice.client_part(MODEL).unwrap();
    assert_eq!(part, fhec_ir::artifact::Artifact::from_bytes(&f.artifact).unwrap().client_part().unwrap().to_bytes());

    let key = alice.upload_key(MODEL, &f.evaluation_key).unwrap();
    let job = alice.submit(MODEL, &key, &encrypted(0)).unwrap();
    let mut seen = vec![];
    let result = alice.wait(&job, |s| seen.push((s.state.clone(), s.progress, s.total))).unwrap();
    assert!(seen.iter().all(|(_, _, total)| *total == bootstraps), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress never goes back: {seen:?}");
    assert_eq!(seen.last().unwrap(), &("done".to_string(), bootstraps, bootstraps));

    // The request histograms after one job: once in the key's and the submission's routes,
    // once per status poll, once in the result's (each recorded before its answer is sent).
    let addr = service.running().addr;
    let text = get_metrics(addr);
    let all = histograms(&text);
    let request = |route: &str, status: &str| {
        series(&all, "fhec_http_request_seconds", &[("route", route), ("status", status)])
            .unwrap_or_else(|| panic!("no requests of {route} {status}:\n{text}"))
    };
    one_observation(request("/v1/models/{name}/keys", "2xx"));
    one_observation(request("/v1/models/{name}/jobs", "2xx"));
    one_observation(request("/v1/jobs/{id}/result", "2xx"));
    assert_eq!(request("/v1/jobs/{id}", "2xx").count, Some(seen.len() as u64));
    let buckets = &request("/v1/jobs/{id}", "2xx").buckets;
    assert_eq!((buckets[0].0, buckets[buckets.len() - 2].0), (0.001, 60.0));
    assert!(text.contains("fhec_rate_limited_total 0\n"), "{text}");
    // The job histograms: the job once in each (its run within its total).
    let mut text = get_metrics(addr);
    for _ in 0..20 {
        if text.contains("fhec_job_seconds_count{model=\"seedq_mnist\"} 1") {
            break;
        }
        // The worker records a job just after storing its result.
        std::thread::sleep(Duration::from_millis(100));
        text = get_metrics(addr);
    }
    let all = histograms(&text);
    let model = [("model", MODEL)];
    let hook = "the worker must record a completed job with Metrics::job_finished";
    let total =
        series(&all, "fhec_job_seconds", &model).unwrap_or_else(|| panic!("no fhec_job_seconds ({hook}):\n{text}"));
    let run =
        series(&all, "fhec_job_run_seconds", &model).unwrap_or_else(|| panic!("no fhec_job_run_seconds:\n{text}"));
    one_observation(total);
    one_observation(run);
    assert!(run.sum.unwrap() <= total.sum.unwrap(), "{run:?} {total:?}");
    assert_eq!(total.buckets.first().map(|b| b.0), Some(0.5));
    assert_eq!(total.buckets[total.buckets.len() - 2].0, 600.0);

    let pred = f.client.decrypt(&result).unwrap();
    assert_eq!(pred.class, class_of_simulation(0));
    // Fetching again gives the same bytes; after deletion the job is gone.
    assert_eq!(alice.result(&job).unwrap(), result);
    alice.delete_job(&job).unwrap();
    assert_eq!(error_of(alice.status(&job).unwrap_err()).0, 404);

    // The synchronous endpoint, with the key already loaded (loaded once, not per job).
    let result = alice.classify(MODEL, &key, &encrypted(1)).unwrap();
    assert_eq!(f.client.decrypt(&result).unwrap().class, class_of_simulation(1));
    assert_eq!(service.running().state.cache.usage().0, 1);

    let mut metrics = get_metrics(addr);
    for _ in 0..20 {
        if metrics.contains("fhec_jobs_done_total 2") {
            break;
        }
        // The worker counts a job just after storing its result.
        std::thread::sleep(Duration::from_millis(100));
        metrics = get_metrics(addr);
    }
    assert!(metrics.contains("fhec_jobs_done_total 2"), "{metrics}");
    assert!(metrics.contains(&format!("fhec_bootstraps_done_total {}", 2 * bootstraps)), "{metrics}");
    assert!(metrics.contains("fhec_queue_depth 0"), "{metrics}");
    // The synchronous endpoint's request, and a 404 of the status route.
    let all = histograms(&metrics);
    one_observation(
        series(&all, "fhec_http_request_seconds", &[("route", "/v1/models/{name}/classify"), ("status", "2xx")])
            .unwrap(),
    );
    one_observation(
        series(&all, "fhec_http_request_seconds", &[("route", "/v1/jobs/{id}"), ("status", "4xx")]).unwrap(),
    );

    // A deleted key is gone: its jobs are refused.
    alice.delete_key(&key).unwrap();
    assert_eq!(error_of(alice.submit(MODEL, &key, &encrypted(0)).unwrap_err()).0, 404);
    service.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn tokens_ownership_bad_bodies_and_the_queue_bound() {
    let f = fixture();
    let data = data_dir("auth");
    // No worker: jobs stay queued. A queue of one job.
    let service = Service::start(&data, 0, 1);
    let addr = service.running().addr;
    let alice_token = service.token("alice");
    let (alice, bob) = (RemoteClient::new(&service.url(), &alice_token), service.client("bob"));

    // Health and metrics need no token; the API does.
    assert_eq!(raw(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"").0, 200);
    let (status, body) = raw(addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let (status, message) = error_of(RemoteClient::new(&service.url(), "fhec_wrong").models().unwrap_err());
    assert_eq!(status, 401);
    assert!(message.contains("unknown token"), "{message}");
    assert_eq!(error_of(alice.client_part("nope").unwrap_err()).0, 404);

    // Bad key bodies are refused and nothing is stored.
    let (status, message) = error_of(alice.upload_key(MODEL, b"not a key at all").unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("not an fhec evaluation key"), "{message}");
    let mut truncated = f.evaluation_key.clone();
    truncated.truncate(truncated.len() - 100);
    let (status, message) = error_of(alice.upload_key(MODEL, &truncated).unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("bytes"), "{message}");
    let (status, message) = error_of(alice.upload_key(MODEL, &f.client.secret_key()).unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("secret"), "{message}");
    let mut corrupt = f.evaluation_key.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 1;
    let (status, message) = error_of(alice.upload_key(MODEL, &corrupt).unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("refused"), "{message}");
    assert_eq!(service.rt.block_on(service.store().key_count()).unwrap(), 0);
    assert_eq!(std::fs::read_dir(data.join("blobs/keys")).unwrap().count(), 0);

    let key = alice.upload_key(MODEL, &f.evaluation_key).unwrap();
    // Bad images: not an image, another size.
    let (status, message) = error_of(alice.submit(MODEL, &key, &f.evaluation_key[..64]).unwrap_err());
    assert_eq!(status, 400, "{message}");
    assert_eq!(error_of(alice.submit(MODEL, "missing", &encrypted(0)).unwrap_err()).0, 404);
    // An oversized body is refused by its length before it is read.
    let image_bytes = alice.models().unwrap()[0].image_bytes;
    let head = format!(
        "POST /v1/models/{MODEL}/jobs?key={key} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice_token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        image_bytes + 1
    );
    let (status, body) = raw(addr, &head, b"");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("over the limit"), "{body}");

    let job = alice.submit(MODEL, &key, &encrypted(0)).unwrap();
    let (status, message) = error_of(alice.result(&job).unwrap_err());
    assert_eq!(status, 409);
    assert!(message.contains("queued"), "{message}");
    // The queue holds one job: the next is refused, nothing queued.
    let (status, message) = error_of(alice.submit(MODEL, &key, &encrypted(0)).unwrap_err());
    assert_eq!(status, 429);
    assert!(message.contains("queue is full"), "{message}");
    assert_eq!(service.rt.block_on(service.store().count(JobState::Queued)).unwrap(), 1);
    assert_eq!(std::fs::read_dir(data.join("blobs/inputs")).unwrap().count(), 1);

    // Another client sees neither alice's job nor her key.
    for e in [bob.status(&job).err(), bob.result(&job).err(), bob.delete_job(&job).err(), bob.delete_key(&key).err()] {
        assert_eq!(error_of(e.expect("refused")).0, 404);
    }
    assert_eq!(error_of(bob.submit(MODEL, &key, &encrypted(0)).unwrap_err()).0, 404);
    assert_eq!(alice.status(&job).unwrap().state, "queued");
    service.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_cut_key_upload_leaves_nothing() {
    let f = fixture();
    let data = data_dir("cut");
    let service = Service::start(&data, 0, 4);
    let token = service.token("alice");
    let head = format!(
        "POST /v1/models/{MODEL}/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        f.evaluation_key.len()
    );
    {
        let mut s = TcpStream::connect(service.running().addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&f.evaluation_key[..f.evaluation_key.len() / 2]).unwrap();
        // Dropped: the connection closes halfway through the key.
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(service.rt.block_on(service.store().key_count()).unwrap(), 0);
    assert_eq!(std::fs::read_dir(data.join("blobs/keys")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(data.join("blobs/tmp")).unwrap().count(), 0);
    service.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_queued_job_survives_a_restart() {
    let f = fixture();
    let data = data_dir("restart");
    // A service with no worker accepts the job, then stops.
    let first = Service::start(&data, 0, 4);
    let token = first.token("alice");
    let alice = RemoteClient::new(&first.url(), &token);
    let key = alice.upload_key(MODEL, &f.evaluation_key).unwrap();
    let job = alice.submit(MODEL, &key, &encrypted(2)).unwrap();
    assert_eq!(alice.status(&job).unwrap().state, "queued");
    first.stop();

    // A new service on the same data directory (no new admin token) runs it.
    let second = Service::start(&data, 1, 4);
    assert!(second.running().admin_token.is_none());
    let alice = RemoteClient::new(&second.url(), &token);
    let t = Instant::now();
    let result = alice.wait(&job, |_| assert!(t.elapsed() < Duration::from_secs(300), "the job never ran")).unwrap();
    assert_eq!(f.client.decrypt(&result).unwrap().class, class_of_simulation(2));
    second.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn rate_limits_are_per_token_and_spare_health_and_metrics() {
    let data = data_dir("limits");
    // One request a minute sustained, three at once; no worker (nothing is classified).
    let service = Service::start_with(Config { workers: 0, rate_per_minute: 1, burst: 3, ..Config::new(&data) });
    let addr = service.running().addr;
    let alice_token = service.token("alice");
    // Clients that return the refusal instead of waiting for the next request (a minute).
    let alice = RemoteClient::new(&service.url(), &alice_token).with_rate_limit_retries(0);
    let bob = service.client("bob").with_rate_limit_retries(0);

    for _ in 0..3 {
        assert_eq!(alice.models().unwrap().len(), 1);
    }
    let (status, message) = error_of(alice.models().unwrap_err());
    assert_eq!(status, 429);
    assert!(message.contains("rate limit") && message.contains("1 request a minute"), "{message}");
    // Any endpoint under /v1, with Retry-After (in seconds) and the JSON error body.
    let head = format!(
        "GET /v1/jobs/0123 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice_token}\r\nConnection: close\r\n\r\n"
    );
    let (status, headers, body) = raw_with_headers(addr, &head, b"");
    assert_eq!(status, 429, "{body}");
    let retry: u64 =
        headers.get("retry-after").unwrap_or_else(|| panic!("no Retry-After: {headers:?}")).parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("bursts of 3") && error.contains(&format!("retry in {retry} s")), "{body}");

    // Another token has its own bucket; unknown tokens are refused as such, not limited.
    for _ in 0..3 {
        assert_eq!(bob.models().unwrap().len(), 1);
    }
    assert_eq!(error_of(bob.models().unwrap_err()).0, 429);
    assert_eq!(error_of(RemoteClient::new(&service.url(), "fhec_wrong").models().unwrap_err()).0, 401);
    // Health and metrics are not limited.
    for _ in 0..5 {
        assert_eq!(raw(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"").0, 200);
    }
    let text = get_metrics(addr);
    assert!(text.contains("# TYPE fhec_rate_limited_total counter\nfhec_rate_limited_total 3\n"), "{text}");
    let all = histograms(&text);
    let limited = series(&all, "fhec_http_request_seconds", &[("route", "/v1/models"), ("status", "4xx")]).unwrap();
    assert_eq!(limited.count, Some(3), "two limited, one unknown token: {limited:?}");
    assert_eq!(
        series(&all, "fhec_http_request_seconds", &[("route", "/v1/models"), ("status", "2xx")]).unwrap().count,
        Some(6)
    );
    assert_eq!(
        series(&all, "fhec_http_request_seconds", &[("route", "/healthz"), ("status", "2xx")]).unwrap().count,
        Some(5)
    );
    // No job ran: the job histograms are declared, with no series.
    assert!(text.contains("# TYPE fhec_job_seconds histogram\n"), "{text}");
    assert!(!all.keys().any(|(name, _)| name.starts_with("fhec_job")), "{text}");
    service.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_client_over_the_rate_limit_waits_as_retry_after_says() {
    let data = data_dir("retry");
    // One request a second, one at once.
    let service = Service::start_with(Config { workers: 0, rate_per_minute: 60, burst: 1, ..Config::new(&data) });
    let token = service.token("carol");
    let head =
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(service.running().addr, &head, b"").0, 200);
    let (status, headers, _) = raw_with_headers(service.running().addr, &head, b"");
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    // The client (retrying by default) waits the second it is told, then gets its answer.
    let carol = RemoteClient::new(&service.url(), &token);
    let t = Instant::now();
    assert_eq!(carol.models().unwrap().len(), 1);
    assert!(t.elapsed() >= Duration::from_millis(500), "answered after waiting: {:?}", t.elapsed());
    // With no retries, the refusal comes back at once.
    let (status, message) = error_of(carol.with_rate_limit_retries(0).models().unwrap_err());
    assert_eq!(status, 429, "{message}");
    service.stop();
    let _ = std::fs::remove_dir_all(&data);
}
