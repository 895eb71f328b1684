//! `fhec remote`: the client of a `fhec serve` service. Keys are generated here and the
//! secret key stays here (written with the same file policy as `fhec keygen`); only the
//! evaluation key, encrypted images and encrypted results travel.
//!
//! A key directory (`keygen --out DIR`) holds `client.key` (secret), `model.client.fhec` (the
//! served model's client part) and `remote.json` (the model's name and the uploaded key's id).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fhec_driver::files::{self, Replace};
use fhec_driver::progress::{size, with_progress};
use fhec_runtime::app::Client;
use fhec_serve::RemoteClient;

use crate::args::ImageSource;
use crate::cmd::crypto::{print_prediction, read_client_part, with_transform_key};

/// Use a `fhec serve` service: generate keys here, classify encrypted images there.
#[derive(clap::Args)]
pub struct Args {
    /// The service's URL.
    #[arg(long, env = "FHEC_URL", default_value = "http://127.0.0.1:8710")]
    url: String,
    /// Your API token (from `fhec serve-token`); prefer the environment variable, which
    /// other users of the machine cannot read from the process list.
    #[arg(long, env = "FHEC_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the models served.
    Models,
    /// Download a model's client part, generate keys here, upload the evaluation key once.
    Keygen(KeygenArgs),
    /// Encrypt an image here, classify it on the service, decrypt the answer here.
    Classify(ClassifyArgs),
    /// Delete the evaluation key of a key directory from the service.
    DeleteKey {
        /// The key directory of `fhec remote keygen`.
        #[arg(long)]
        keys: PathBuf,
    },
}

/// `fhec remote keygen`.
#[derive(clap::Args)]
struct KeygenArgs {
    /// The model's name on the service (`fhec remote models` lists them).
    model: String,
    /// The key directory to write (`client.key`: secret, keep it).
    #[arg(long)]
    out: PathBuf,
    /// Replace the files of an existing key directory.
    #[arg(long)]
    force: bool,
}

/// `fhec remote classify`.
#[derive(clap::Args)]
struct ClassifyArgs {
    #[command(flatten)]
    source: ImageSource,
    /// The key directory of `fhec remote keygen`.
    #[arg(long)]
    keys: PathBuf,
    /// The transform key file, for a model trained on transformed images (its client part
    /// names a keyed transform): the image is transformed with it before encryption.
    #[arg(long)]
    transform_key: Option<PathBuf>,
}

/// What `remote.json` of a key directory records.
struct KeyDir {
    model: String,
    key: String,
}

const CLIENT_KEY: &str = "client.key";
const CLIENT_PART: &str = "model.client.fhec";
const REMOTE: &str = "remote.json";

fn read_key_dir(dir: &Path) -> Result<KeyDir> {
    let p = dir.join(REMOTE);
    let text = files::read(&p, "key directory record")?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a `fhec remote keygen` record", p.display()))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .map(String::from)
            .with_context(|| format!("{} has no {name:?} (write it again with `fhec remote keygen`)", p.display()))
    };
    Ok(KeyDir { model: field("model")?, key: field("key")? })
}

/// Runs `fhec remote`.
pub fn run(a: Args) -> Result<()> {
    let remote = RemoteClient::new(&a.url, &a.token);
    match a.command {
        Command::Models => {
            for m in remote.models()? {
                println!(
                    "{}: {} bootstraps, input {:?}, evaluation key {}, encrypted image {}; {}",
                    m.name,
                    m.bootstraps,
                    m.input_shape,
                    size(m.key_bytes),
                    size(m.image_bytes),
                    m.params
                );
            }
            Ok(())
        }
        Command::Keygen(k) => keygen(&remote, &a.url, k),
        Command::Classify(c) => classify(&remote, c),
        Command::DeleteKey { keys } => {
            let kd = read_key_dir(&keys)?;
            remote.delete_key(&kd.key)?;
            println!("deleted evaluation key {} of {} from {}", kd.key, kd.model, a.url);
            Ok(())
        }
    }
}

fn keygen(remote: &RemoteClient, url: &str, a: KeygenArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let _lock = files::lock_dir(&a.out, "keys")?;
    let paths = [a.out.join(CLIENT_PART), a.out.join(CLIENT_KEY), a.out.join(REMOTE)];
    let replace = Replace::from_flag(a.force);
    for p in &paths {
        files::check_output(p, &[], replace, "--out")?;
    }
    let part = remote.client_part(&a.model)?;
    let t = Instant::now();
    let client = Client::new(&part).with_context(|| format!("the client part of {} does not load", a.model))?;
    let (secret, evaluation) = (client.secret_key(), client.evaluation_key());
    println!(
        "keys generated in {:.1} s; uploading the evaluation key ({})",
        t.elapsed().as_secs_f64(),
        size(evaluation.len())
    );
    let t = Instant::now();
    let key = remote.upload_key(&a.model, &evaluation)?;
    let record = serde_json::to_vec_pretty(&serde_json::json!({ "url": url, "model": a.model, "key": key }))?;
    let written = files::write_all(&[(&paths[0], &part), (&paths[1], &secret), (&paths[2], &record)], replace);
    if let Err(e) = written {
        // The uploaded key is useless without its secret key here.
        let _ = remote.delete_key(&key);
        return Err(e);
    }
    println!(
        "evaluation key {key} uploaded and checked in {:.1} s; {} (secret: keep it) and {} written",
        t.elapsed().as_secs_f64(),
        paths[1].display(),
        paths[2].display()
    );
    Ok(())
}

fn classify(remote: &RemoteClient, a: ClassifyArgs) -> Result<()> {
    let kd = read_key_dir(&a.keys)?;
    let (part_path, key_path) = (a.keys.join(CLIENT_PART), a.keys.join(CLIENT_KEY));
    let client = Client::with_key(&read_client_part(&part_path)?, &files::read(&key_path, "client key")?)
        .with_context(|| format!("cannot load {} for {}", key_path.display(), part_path.display()))?;
    let (client, transformed) = with_transform_key(client, &part_path, a.transform_key.as_deref())?;
    let (pixels, what) = a.source.load(&client.spec().input.shape)?;
    let what = format!("{what}{transformed}");
    let image = client.encrypt(&pixels)?;
    let t = Instant::now();
    let job = remote.submit(&kd.model, &kd.key, &image)?;
    let total = remote.status(&job)?.total;
    println!("submitted {what} ({}) as job {job}", size(image.len()));
    let result = with_progress(total, "classifying on the server", |done| {
        remote.wait(&job, |s| done.store(s.progress, Ordering::Relaxed))
    })?;
    let _ = remote.delete_job(&job);
    let pred = client.decrypt(&result).context("cannot decrypt the service's result")?;
    println!("classified in {:.1} s (result {})", t.elapsed().as_secs_f64(), size(result.len()));
    if pred.scores.is_empty() {
        bail!("the result holds no score");
    }
    print_prediction(&pred);
    Ok(())
}
