//! The client and server commands over files: `fhec keygen`, `encrypt`, `run` (the server
//! side, with the evaluation key only) and `decrypt`. The client's commands take the
//! model's client part (`MODEL.client.fhec`, no weights) or its full artifact; `run` takes
//! the full artifact.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fhec_driver::files::{self, Replace};
use fhec_driver::progress::{size, with_progress};
use fhec_ir::artifact::Artifact;
use fhec_ir::client::ClientSpec;
use fhec_runtime::app::{Client, Server};

use crate::args::ImageSource;

/// Generate a client key and an evaluation (server) key for a model.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The model's client part (`MODEL.client.fhec` from `fhec build`), or its full artifact.
    #[arg(value_name = "CLIENT_PART")]
    artifact: PathBuf,
    /// Directory to write `client.key` (secret: keep it) and `server.key` (send it).
    #[arg(long)]
    out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

/// Encrypt an image (a PNG / PGM file, or one image of a test set) with the client key.
#[derive(clap::Args)]
pub struct EncryptArgs {
    /// The model's client part (`MODEL.client.fhec`), or its full artifact.
    #[arg(value_name = "CLIENT_PART")]
    artifact: PathBuf,
    /// The client key.
    #[arg(long)]
    client_key: PathBuf,
    #[command(flatten)]
    source: ImageSource,
    /// The transform key file, for a model trained on transformed images (its client part
    /// names a keyed transform such as etc:4): the image is transformed with it before it
    /// is encrypted. Give the original image. The key stays on the client.
    #[arg(long)]
    transform_key: Option<PathBuf>,
    /// Output file of the encrypted image.
    #[arg(short, long)]
    out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

/// Classify an encrypted image with the evaluation key only (the server side).
#[derive(clap::Args)]
pub struct RunArgs {
    /// The model's full artifact (`MODEL.fhec` from `fhec build`; the server's file).
    artifact: PathBuf,
    /// The evaluation key.
    #[arg(long)]
    server_key: PathBuf,
    /// The encrypted image.
    #[arg(long)]
    input: PathBuf,
    /// Output file of the encrypted result.
    #[arg(short, long)]
    out: PathBuf,
    /// Replace the output file if it exists (never one of the inputs).
    #[arg(long)]
    force: bool,
}

/// Decrypt an encrypted result with the client key and print the class.
#[derive(clap::Args)]
pub struct DecryptArgs {
    /// The model's client part (`MODEL.client.fhec`), or its full artifact.
    #[arg(value_name = "CLIENT_PART")]
    artifact: PathBuf,
    /// The client key.
    #[arg(long)]
    client_key: PathBuf,
    /// The encrypted result.
    #[arg(long)]
    input: PathBuf,
}

/// Reads the model file of a client command: a client part or a full artifact (the app API
/// validates the rest).
pub(crate) fn read_client_part(path: &Path) -> Result<Vec<u8>> {
    let bytes = files::read(path, "client part")?;
    if !ClientSpec::sniff(&bytes) && !Artifact::sniff(&bytes) {
        bail!(
            "{} is not an fhec client part or artifact (`fhec build MODEL.onnx` writes MODEL.client.fhec for clients)",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads the server's full artifact, refusing a client part with a message naming the file.
fn read_artifact(path: &Path) -> Result<Vec<u8>> {
    let bytes = files::read(path, "artifact")?;
    if ClientSpec::sniff(&bytes) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let hint = match name.strip_suffix(".client.fhec") {
            Some(stem) => format!(" ({stem}.fhec, written beside it by `fhec build`)"),
            None => String::new(),
        };
        bail!(
            "{} is a client part (parameters and encodings for clients, no circuit); the server needs the model's full artifact{hint}",
            path.display()
        );
    }
    if !Artifact::sniff(&bytes) {
        bail!("{} is not an fhec artifact (build one with `fhec build MODEL.onnx`)", path.display());
    }
    Ok(bytes)
}

/// Prints a decrypted prediction as `fhec decrypt` does: the scores, then `class: N`.
pub(crate) fn print_prediction(pred: &fhec_runtime::app::Prediction) {
    let s: Vec<String> = pred.scores.iter().map(|v| format!("{v:.3}")).collect();
    println!("scores: [{}]", s.join(", "));
    println!("class: {}", pred.class);
}

/// Runs `fhec keygen`: both keys are generated in memory, then written as a pair under a
/// lock on the directory (see [`files::write_all`]).
pub fn keygen(a: KeygenArgs) -> Result<()> {
    let art = read_client_part(&a.artifact)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let _lock = files::lock_dir(&a.out, "keys")?;
    let (cp, sp) = (a.out.join("client.key"), a.out.join("server.key"));
    let replace = Replace::from_flag(a.force);
    for p in [&cp, &sp] {
        files::check_output(p, &[&a.artifact], replace, "--out")?;
    }
    let t = std::time::Instant::now();
    let client = Client::new(&art).with_context(|| format!("cannot use {}", a.artifact.display()))?;
    let (cb, sb) = (client.secret_key(), client.evaluation_key());
    files::write_all(&[(&sp, &sb), (&cp, &cb)], replace)?;
    println!(
        "keys generated in {:.1} s: {} ({}, secret: keep it), {} ({}, evaluation key: send it to the server)",
        t.elapsed().as_secs_f64(),
        cp.display(),
        size(cb.len()),
        sp.display(),
        size(sb.len())
    );
    Ok(())
}

/// Runs `fhec encrypt`.
pub fn encrypt(a: EncryptArgs) -> Result<()> {
    let replace = Replace::from_flag(a.force);
    let mut inputs = vec![a.artifact.as_path(), a.client_key.as_path()];
    inputs.extend(a.source.image.as_deref());
    inputs.extend(a.transform_key.as_deref());
    files::check_output(&a.out, &inputs, replace, "-o")?;
    let client = Client::with_key(&read_client_part(&a.artifact)?, &files::read(&a.client_key, "client key")?)
        .with_context(|| format!("cannot load {} for {}", a.client_key.display(), a.artifact.display()))?;
    let (client, what_transform) = with_transform_key(client, &a.artifact, a.transform_key.as_deref())?;
    let (pixels, what) = a.source.load(&client.spec().input.shape)?;
    let b = client.encrypt(&pixels).with_context(|| format!("cannot encrypt {what}"))?;
    files::write(&a.out, &b, replace)?;
    println!("encrypted {what}{what_transform} to {} ({})", a.out.display(), size(b.len()));
    Ok(())
}

/// The client with the transform key file `key` when its client part (`model`) names a
/// keyed transform (an error naming both without one), and how its images are transformed
/// (for messages: empty without a transform). A key for a model without one is unused, with
/// a note.
pub(crate) fn with_transform_key(client: Client, model: &Path, key: Option<&Path>) -> Result<(Client, String)> {
    match (client.transform(), key) {
        (Some(t), key) => {
            let k = fhec_driver::transform::key_for(model, t, key)?;
            Ok((client.with_transform_key(k), format!(", transformed with {t}")))
        }
        (None, Some(k)) => {
            eprintln!(
                "note: {} names no keyed transform; the image is encrypted as it is and {} is not used",
                model.display(),
                k.display()
            );
            Ok((client, String::new()))
        }
        (None, None) => Ok((client, String::new())),
    }
}

/// Runs `fhec run` (the server side).
pub fn run(a: RunArgs) -> Result<()> {
    let replace = Replace::from_flag(a.force);
    files::check_output(&a.out, &[&a.artifact, &a.server_key, &a.input], replace, "-o")?;
    let server = Server::new(&read_artifact(&a.artifact)?, &files::read(&a.server_key, "evaluation key")?)
        .with_context(|| format!("cannot load {} for {}", a.server_key.display(), a.artifact.display()))?;
    let ct = files::read(&a.input, "encrypted image")?;
    let t = std::time::Instant::now();
    let res = with_progress(server.bootstraps(), "evaluating", |p| server.classify_with_progress(&ct, p))
        .with_context(|| format!("cannot evaluate {} with {}", a.input.display(), a.server_key.display()))?;
    files::write(&a.out, &res, replace)?;
    println!("evaluated in {:.2} s; wrote {} ({})", t.elapsed().as_secs_f64(), a.out.display(), size(res.len()));
    Ok(())
}

/// Runs `fhec decrypt`.
pub fn decrypt(a: DecryptArgs) -> Result<()> {
    let client = Client::with_key(&read_client_part(&a.artifact)?, &files::read(&a.client_key, "client key")?)
        .with_context(|| format!("cannot load {} for {}", a.client_key.display(), a.artifact.display()))?;
    let res = files::read(&a.input, "encrypted result")?;
    let pred = client
        .decrypt(&res)
        .with_context(|| format!("cannot decrypt {} with {}", a.input.display(), a.client_key.display()))?;
    print_prediction(&pred);
    Ok(())
}
