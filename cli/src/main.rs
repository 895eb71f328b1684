//! `fhec`: the command-line front of the compiler and runtime.
//!
//! Every failure prints `error: ...` naming the file and what is wrong, and exits with
//! status 2. The commands live in `cmd/`, one module each; this file only parses and
//! dispatches. Output files follow one policy (`fhec_driver::files`): an existing file is
//! replaced only with `--force`, never when it is one of the command's inputs, and every
//! write is atomic.

mod args;
mod cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// fhec: compile grayscale-image CNNs (ONNX) into TFHE circuits and run them.
#[derive(Parser)]
#[command(name = "fhec", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import an ONNX model and print its NN IR (or show what a client part or artifact holds).
    Inspect(cmd::inspect::Args),
    /// Compile an ONNX model into a circuit artifact (and its client part) and report its cost.
    Build(cmd::build::Args),
    /// Measure top-1 accuracy on an IDX test set.
    Eval(cmd::eval::Args),
    /// Write a new random key for the keyed image transforms (`fhec transform`).
    TransformKey(cmd::transform::KeyArgs),
    /// Apply a keyed image transform (EtC, SKK, Tanaka) to a PNG / PGM image, or invert one.
    /// Not encryption: these transforms leak the image's content.
    Transform(cmd::transform::Args),
    #[cfg(feature = "fhe")]
    /// Generate a client key and an evaluation (server) key from a model's client part.
    Keygen(cmd::crypto::KeygenArgs),
    #[cfg(feature = "fhe")]
    /// Encrypt an image (a PNG / PGM file, or one image of a test set) with the client key.
    Encrypt(cmd::crypto::EncryptArgs),
    #[cfg(feature = "fhe")]
    /// Classify an encrypted image with the evaluation key only (the server side).
    Run(cmd::crypto::RunArgs),
    #[cfg(feature = "fhe")]
    /// Decrypt an encrypted result with the client key and print the class.
    Decrypt(cmd::crypto::DecryptArgs),
    #[cfg(feature = "fhe")]
    /// The quick start: compile the bundled demo model (`mnist_c16f128_sq`, 5-bit tables),
    /// generate keys, classify sample images encrypted, and compare with the simulation.
    Demo(cmd::demo::Args),
    #[cfg(feature = "fhe")]
    /// Serve models over HTTP: clients upload an evaluation key once, then submit encrypted
    /// images (job queue in SQLite under --data).
    Serve(cmd::serve::Args),
    #[cfg(feature = "fhe")]
    /// Create an API token for a client of `fhec serve` (the admin command).
    ServeToken(cmd::serve::TokenArgs),
    #[cfg(feature = "fhe")]
    /// Use a `fhec serve` service: keys generated here, images classified there.
    Remote(cmd::remote::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", fhec_driver::error_message(&e));
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Build(a) => cmd::build::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::TransformKey(a) => cmd::transform::key(a),
        Command::Transform(a) => cmd::transform::run(a),
        #[cfg(feature = "fhe")]
        Command::Keygen(a) => cmd::crypto::keygen(a),
        #[cfg(feature = "fhe")]
        Command::Encrypt(a) => cmd::crypto::encrypt(a),
        #[cfg(feature = "fhe")]
        Command::Run(a) => cmd::crypto::run(a),
        #[cfg(feature = "fhe")]
        Command::Decrypt(a) => cmd::crypto::decrypt(a),
        #[cfg(feature = "fhe")]
        Command::Demo(a) => cmd::demo::run(a),
        #[cfg(feature = "fhe")]
        Command::Serve(a) => cmd::serve::run(a),
        #[cfg(feature = "fhe")]
        Command::ServeToken(a) => cmd::serve::token(a),
        #[cfg(feature = "fhe")]
        Command::Remote(a) => cmd::remote::run(a),
    }
}
