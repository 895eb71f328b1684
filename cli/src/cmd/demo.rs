//! `fhec demo`: the quick start on the bundled seed network.

use std::path::Path;

use anyhow::Result;
use fhec_compiler::quantize::Rounding;
use fhec_compiler::report::build_report;
use fhec_driver::{CompileOptions, compile_model};
use fhec_runtime::dataset::{DatasetKind, bundled_sample};

/// The quick start: compile the bundled seed network (`seedq_mnist`, 6-bit tables),
/// generate keys, classify sample images encrypted, and compare with the simulation.
#[derive(clap::Args)]
pub struct Args {
    /// How many bundled sample images to classify.
    #[arg(long, default_value_t = 2, value_parser = crate::args::at_least_one)]
    images: usize,
    /// How accumulators are rounded before their table: `approximate` (320 bootstraps,
    /// about 10 s per image; a read near a step boundary may be one step off, so only the
    /// class is compared with the simulation) or `exact` (1,344 bootstraps, about 35 s
    /// per image; outputs equal the simulation bit for bit).
    #[arg(long, default_value_t = Rounding::Approximate)]
    rounding: Rounding,
}

/// The demo model, compiled into the binary: the seed network (TenSEAL's tutorial network)
/// trained with fhec's quantization, whose metadata carries its widths and dataset.
const DEMO_MODEL: &[u8] = include_bytes!("../../../examples/models/seedq_mnist.onnx");

/// Runs `fhec demo`.
pub fn run(a: Args) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fhec-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join("seedq_mnist.onnx");
    std::fs::write(&model, DEMO_MODEL)?;
    println!(
        "== fhec demo: the bundled seed network (seedq_mnist, --max-table-bits {} --rounding {}), end to end ==",
        CompileOptions::DEMO_TABLE_BITS,
        a.rounding
    );
    let options = CompileOptions::demo(a.rounding);
    let compiled = compile_model(&model, &options);
    let _ = std::fs::remove_dir_all(&dir);
    let (_, art) = compiled?;
    let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
    print!("{}", report.to_text());
    let mut ds = bundled_sample(DatasetKind::Mnist);
    ds.truncate(a.images);
    println!();
    fhec_driver::encrypted::fhe_eval(Path::new("seedq_mnist.onnx (bundled)"), &art, &ds, DatasetKind::Mnist)?;
    Ok(())
}
