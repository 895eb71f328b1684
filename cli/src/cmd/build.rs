//! `fhec build`: compile an ONNX model into a circuit artifact and report its cost. It writes
//! two files: the full artifact (the server's: circuit, weights, parameters) and, when the
//! model has TFHE parameters, its client part beside it (`MODEL.client.fhec`: parameters and
//! encodings, no weight), which is what clients need.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fhec_compiler::report::build_report;
use fhec_driver::compile::{Compiled, compile_model_with, pass_comparison};
use fhec_driver::files::{self, Replace};
use fhec_driver::model::{import, read};
use fhec_ir::Graph;
use fhec_ir::artifact::ArtifactError;
use fhec_ir::nn::print;

use crate::args::CompileArgs;

/// Compile an ONNX model into a circuit artifact (and its client part) and report its cost.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Output artifact, the server's file (default: the model's path with extension `.fhec`).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Output client part, the file to ship to clients (default: the artifact's path with
    /// extension `.client.fhec`).
    #[arg(long)]
    client_out: Option<PathBuf>,
    /// Replace the output files if they exist.
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
    let client_out = a.client_out.clone().unwrap_or_else(|| client_part_path(&out));
    let replace = Replace::from_flag(a.force);
    // Before minutes of fitting: the outputs must be writable under the policy.
    files::check_output(&out, &[&a.model], replace, "-o")?;
    if client_out == out {
        bail!("--client-out {} is the artifact's own path; choose another", client_out.display());
    }
    files::check_output(&client_out, &[&a.model, &out], replace, "--client-out")?;
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
    // A simulation-only artifact has no parameters, so no client part.
    let client = match art.client_part() {
        Ok(c) => Some(c.to_bytes()),
        Err(ArtifactError::NoParameters { .. }) => None,
        Err(e) => return Err(e).context("cannot derive the client part"),
    };
    files::write(&out, &bytes, replace)?;
    if let Some(c) = &client {
        files::write(&client_out, c, replace)?;
    }
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
        v["client_part"] = match &client {
            Some(c) => serde_json::json!({ "path": client_out.display().to_string(), "bytes": c.len() }),
            None => serde_json::Value::Null,
        };
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
        if let Ok(Some(t)) = art.transform()
            && art.circuit.metadata.contains_key(fhec_compiler::fold::FOLDED_KEY)
        {
            println!(
                "input transform: {t}, folded into the circuit (a gather after the input, no bootstrap; calibrated on plain images); the artifact holds the transform's map, not the key; clients encrypt with `fhec encrypt --transform-key FILE`"
            );
        } else if let Ok(Some(t)) = art.transform() {
            println!(
                "input transform: {t} (the model takes keyed transforms of images: calibrated on images transformed with the --transform-key file; the artifact and client part name the scheme, never the key; clients encrypt with `fhec encrypt --transform-key FILE`)"
            );
        }
        println!("wrote {} ({} bytes: the full artifact, for the server)", out.display(), bytes.len());
        match &client {
            Some(c) => println!(
                "wrote {} ({} bytes: the client part, no weights; what clients need for keygen, encrypt, decrypt)",
                client_out.display(),
                c.len()
            ),
            None => println!("no client part: the artifact has no TFHE parameters (simulation only)"),
        }
    }
    Ok(())
}

/// The default path of the client part beside artifact `out`: `m.fhec` -> `m.client.fhec`.
fn client_part_path(out: &Path) -> PathBuf {
    out.with_extension("client.fhec")
}
