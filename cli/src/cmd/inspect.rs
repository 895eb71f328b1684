//! `fhec inspect`: the NN IR of an ONNX model, as text or as a JSON summary; or what a
//! compiled file holds (a client part: its parameters and encodings; a full artifact: its
//! cost report).

use std::path::PathBuf;

use anyhow::{Context, Result};
use fhec_compiler::report::build_report;
use fhec_driver::model::{import, read};
use fhec_ir::artifact::Artifact;
use fhec_ir::client::ClientSpec;
use fhec_ir::nn::print;

use crate::args::ImportArgs;

/// Import an ONNX model and print its NN IR (or show what a client part or an artifact holds).
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model (or a client part, or an artifact, from `fhec build`).
    model: PathBuf,
    /// Print a JSON summary (op counts, shapes, parameter count) instead; for a client part
    /// or an artifact, its contents or its report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    import: ImportArgs,
}

/// Runs `fhec inspect`.
pub fn run(a: Args) -> Result<()> {
    let bytes = read(&a.model)?;
    if ClientSpec::sniff(&bytes) {
        let spec = ClientSpec::from_bytes(&bytes).with_context(|| format!("cannot load {}", a.model.display()))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&spec)?);
        } else {
            print!("{}", spec.summary());
        }
        return Ok(());
    }
    if Artifact::sniff(&bytes) {
        let art = Artifact::from_bytes(&bytes).with_context(|| format!("cannot load {}", a.model.display()))?;
        let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "full artifact of {} (fhec {}): the circuit with its weights, for the server{}",
                art.source,
                art.fhec_version,
                if art.fhe.is_some() { "; its client part is what clients need" } else { "" }
            );
            print!("{}", report.to_text());
        }
        return Ok(());
    }
    let g = import(&a.model, &bytes, &a.import.options())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&fhec_compiler::summary::summarize(&g))?);
    } else {
        print!("{}", print::print(&g));
    }
    Ok(())
}
