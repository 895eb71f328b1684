//! `fhec demo`: the quick start on a bundled MNIST model.

use std::path::Path;

use anyhow::Result;
use fhec_compiler::quantize::Rounding;
use fhec_compiler::report::build_report;
use fhec_driver::{CompileOptions, compile_model};
use fhec_runtime::dataset::{DatasetKind, bundled_sample};

/// The quick start: compile the bundled demo model (`mnist_c16f128_sq`, 5-bit tables) as
/// `fhec build` does, generate keys, classify sample images encrypted, and compare with the
/// simulation.
#[derive(clap::Args)]
pub struct Args {
    /// How many bundled sample images to classify.
    #[arg(long, default_value_t = 2, value_parser = crate::args::at_least_one)]
    images: usize,
    /// How accumulators are rounded before their table: `approximate` (1,152 bootstraps,
    /// about 10 s per image on 2 cores; a read near a step boundary may be one step off, so
    /// only the class is compared with the simulation) or `exact` (several rounding
    /// bootstraps per activation, about five times as long; outputs equal the simulation
    /// bit for bit).
    #[arg(long, default_value_t = Rounding::Approximate)]
    rounding: Rounding,
}

/// The demo model's name.
const DEMO_NAME: &str = "mnist_c16f128_sq";

/// The demo model, compiled into the binary: a network designed for fhec's cost model (one
/// strided convolution, one dense layer of 128, clipped-square activations on 4 bits read by
/// 5-bit tables; `examples/models/frontier/`), whose metadata carries its widths and dataset.
const DEMO_MODEL: &[u8] = include_bytes!("../../../examples/models/frontier/mnist_c16f128_sq.onnx");

/// Runs `fhec demo`.
pub fn run(a: Args) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fhec-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join(format!("{DEMO_NAME}.onnx"));
    std::fs::write(&model, DEMO_MODEL)?;
    println!(
        "== fhec demo: the bundled model {DEMO_NAME} (examples/models/frontier/; fhec build --rounding {} --accuracy-budget {}), end to end ==",
        a.rounding,
        CompileOptions::DEMO_ACCURACY_BUDGET
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
    let name = format!("{DEMO_NAME}.onnx (bundled)");
    fhec_driver::encrypted::fhe_eval(Path::new(&name), &art, &ds, DatasetKind::Mnist)?;
    Ok(())
}
