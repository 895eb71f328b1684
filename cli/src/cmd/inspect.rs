//! `fhec inspect`: the NN IR of an ONNX model, as text or as a JSON summary.

use std::path::PathBuf;

use anyhow::Result;
use fhec_driver::model::load_model;
use fhec_ir::nn::print;

use crate::args::ImportArgs;

/// Import an ONNX model and print its NN IR.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print a JSON summary (op counts, shapes, parameter count) instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    import: ImportArgs,
}

/// Runs `fhec inspect`.
pub fn run(a: Args) -> Result<()> {
    let g = load_model(&a.model, &a.import.options())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&fhec_compiler::summary::summarize(&g))?);
    } else {
        print!("{}", print::print(&g));
    }
    Ok(())
}
