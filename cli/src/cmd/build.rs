//! `fhec build`: compile an ONNX model into a circuit artifact and report its cost.

use std::path::PathBuf;

use anyhow::Result;
use fhec_compiler::report::build_report;
use fhec_driver::compile::{Compiled, compile_model_with, pass_comparison};
use fhec_driver::files::{self, Replace};
use fhec_driver::model::{import, read};
use fhec_ir::Graph;
use fhec_ir::nn::print;

use crate::args::CompileArgs;

/// Compile an ONNX model into a circuit artifact and report its cost.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Output artifact (default: the model's path with extension `.fhec`).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Replace the output artifact if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also print the circuit IR.
    #[arg(long)]
    print_circuit: bool,
    /// Print the NN IR as imported and after every pass (with what each pass did).
    #[arg(long)]
    print_ir_after_all: bool,
    #[command(flatten)]
    compile: CompileArgs,
}

/// Runs `fhec build`.
pub fn run(a: Args) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.model.with_extension("fhec"));
    let replace = Replace::from_flag(a.force);
    // Before minutes of fitting: the output must be writable under the policy.
    files::check_output(&out, &[&a.model], replace, "-o")?;
    let options = a.compile.options();
    let mut show = |pass: &str, g: &Graph, notes: &[String]| {
        if a.print_ir_after_all {
            println!("// ----- IR after pass '{pass}'");
            for n in notes {
                println!("// {n}");
            }
            print!("{}", print::print(g));
        }
    };
    if a.print_ir_after_all {
        let g = import(&a.model, &read(&a.model)?, &options.import)?;
        println!("// ----- IR as imported");
        print!("{}", print::print(&g));
    }
    let Compiled { artifact: art, before_passes: before, fit, .. } =
        compile_model_with(&a.model, &options, &mut show, true)?;
    let bytes = art.to_bytes();
    files::write(&out, &bytes, replace)?;
    let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(b) = &before {
            v["before_passes"] = serde_json::to_value(build_report(&b.circuit, &b.options, b.fhe.as_ref()))?;
        }
        if let Some(f) = &fit {
            v["fit"] = serde_json::to_value(f)?;
        }
        v["artifact"] = serde_json::json!({ "path": out.display().to_string(), "bytes": bytes.len() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if a.print_circuit {
            print!("{}", fhec_ir::circuit::print::print(&art.circuit));
        }
        if let Some(f) = &fit {
            print!("{}", f.to_text());
        }
        print!("{}", report.to_text());
        if let Some(b) = &before {
            println!("{}", pass_comparison(b, &art));
        }
        println!("wrote {} ({} bytes)", out.display(), bytes.len());
    }
    Ok(())
}
