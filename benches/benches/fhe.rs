//! Encrypted-execution benchmarks, so that regressions show:
//!
//! * `bootstrap/<model> <params>`: for the parameters the compiler chooses for the bundled
//!   `fhe_mnist` at 4- and 5-bit tables, for the seed network (`seedq_mnist`, 6-bit tables,
//!   approximate rounding) and for `fhec demo`'s model (`frontier/mnist_c16f128_sq`, as
//!   [`CompileOptions::demo`] compiles it): one keyswitch + programmable bootstrap (what every table element
//!   costs), the rounding bootstrap (what every read of exact rounding costs) where those
//!   parameters have a rounding key, and the three steps of a layer's bootstraps separately,
//!   as the runtime batches them: 16 keyswitches in one pass over the key, the (centered)
//!   modulus switch of the 16, and their blind rotations in one batched pass over the
//!   bootstrap key (which switches them again inside; the switch is a small part of it), so
//!   a regression shows where it is;
//! * `layer/fhe_mnist fc1+act2`: the second layer of `fhe_mnist` (a 256->32 dense layer on
//!   ciphertexts, offset, exact rounding and the ReLU table: 160 bootstraps) on all cores,
//!   and the same layer with approximate rounding (its 32 table bootstraps only, at the
//!   parameters chosen for that circuit).
//!
//! Run with `cargo bench -p fhec-benches`. Speed targets live here and in `fhec-bench` (`cargo bench-table`),
//! never in tests.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fhec_compiler::quantize::{QuantOptions, Rounding};
use fhec_compiler::{BuildOptions, build};
use fhec_driver::compile::{CompileOptions, compile_model};
use fhec_ir::artifact::{Artifact, ParametrizedCircuit};
use fhec_ir::circuit::{CNode, COp, Circuit};
use fhec_ir::params::EncodingPlan;
use fhec_runtime::dataset::{DatasetKind, bundled_sample};
use fhec_runtime::fhe::{ClientKey, evaluate, test_support::OneBootstrap};

const MODEL: &[u8] = include_bytes!("../../examples/models/fhe_mnist.onnx");
const SEED: &[u8] = include_bytes!("../../examples/models/seedq_mnist.onnx");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/frontier/mnist_c16f128_sq.onnx");

fn compile(model: &[u8], name: &str, max_table_bits: Option<u32>, rounding: Rounding) -> Artifact {
    let calib = bundled_sample(DatasetKind::Mnist);
    let px: Vec<&[u8]> = (0..calib.len()).map(|i| calib.pixels(i)).collect();
    let g = fhec_compiler::import_onnx(model, &Default::default()).expect("import");
    let mut quant = QuantOptions::for_model(&g).expect("metadata");
    if let Some(t) = max_table_bits {
        quant.max_table_bits = t;
    }
    quant.rounding = rounding;
    let opts = BuildOptions { quant: Some(quant), ..Default::default() };
    build(model, name, &px, &opts).expect("build")
}

fn fhe_mnist(max_table_bits: Option<u32>, rounding: Rounding) -> Artifact {
    compile(MODEL, "fhe_mnist.onnx", max_table_bits, rounding)
}

/// The part of `c` from the first dense layer to the table after it, with a fresh input
/// standing for the flattened first-layer activations.
fn second_layer(c: &Circuit) -> Circuit {
    let first = c.nodes.iter().position(|n| matches!(n.op, COp::Dense { .. })).expect("a dense layer");
    let table = first + c.nodes[first..].iter().position(|n| matches!(n.op, COp::Table { .. })).expect("a table");
    let src = &c.nodes[c.nodes[first].inputs[0]];
    let mut nodes = vec![CNode {
        name: "input".into(),
        op: COp::Input { bits: src.range.width() },
        inputs: vec![],
        shape: src.shape.clone(),
        range: src.range,
        norm2: 1.0,
    }];
    for n in &c.nodes[first..=table] {
        let inputs = n.inputs.iter().map(|&i| if i < first { 0 } else { i - first + 1 }).collect();
        nodes.push(CNode { inputs, ..n.clone() });
    }
    let output = nodes.len() - 1;
    Circuit { nodes, output, ..c.clone() }
}

fn benches(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("bootstrap");
    g.sample_size(20);
    let sets = [
        ("fhe_mnist 4-bit tables", 4, fhe_mnist(Some(4), Rounding::Exact)),
        ("fhe_mnist 5-bit tables", 5, fhe_mnist(Some(5), Rounding::Exact)),
        (
            "seed network (seedq_mnist 6-bit tables, approximate)",
            6,
            compile(SEED, "seedq_mnist.onnx", Some(6), Rounding::Approximate),
        ),
        (
            "demo (mnist_c16f128_sq 5-bit tables, approximate)",
            5,
            compile_model(Path::new(DEMO), &CompileOptions::demo(Rounding::Approximate)).expect("demo").1,
        ),
    ];
    for (label, t, art) in sets {
        let setup = art.fhe.as_ref().expect("parameters");
        let p = &setup.params;
        let ck = ClientKey::generate(p);
        let sk = ck.server_key();
        let ct = ck.encrypt(&[3], &[1], t);
        let mut b = OneBootstrap::new(&sk, t);
        let name = format!("{label}: {}", p.summary());
        g.bench_function(name, |bch| bch.iter(|| b.run(&ct).len()));
        let batch = ck.encrypt(&[3; 16], &[16], t);
        let name = format!("{label}, 16 keyswitches in one pass: {}", p.summary());
        g.bench_function(name, |bch| bch.iter(|| b.keyswitch(&batch)));
        b.keyswitch(&batch);
        let name = format!("{label}, 16 centered modulus switches: {}", p.summary());
        g.bench_function(name, |bch| bch.iter(|| b.modulus_switch_batch()));
        let name = format!("{label}, 16 blind rotations in one batched pass: {}", p.summary());
        g.bench_function(name, |bch| bch.iter(|| b.bootstrap_batch().len()));
        if p.has_rounding_bsk() {
            let mut r = OneBootstrap::rounding(&sk);
            let name = format!("{label}, rounding bootstrap: {}", p.summary());
            g.bench_function(name, |bch| bch.iter(|| r.run(&ct).len()));
        }
    }
    g.finish();

    let mut g = cr.benchmark_group("layer");
    g.sample_size(10);
    for (rounding, label) in [(Rounding::Exact, "exact rounding"), (Rounding::Approximate, "approximate rounding")] {
        let art = fhe_mnist(None, rounding);
        let setup = art.fhe.as_ref().expect("parameters");
        let sub = second_layer(&art.circuit);
        let plan = EncodingPlan::plan(&sub).expect("plan");
        let ck = ClientKey::generate(&setup.params);
        let sk = ck.server_key();
        let n: usize = sub.input_shape().iter().product();
        let vals: Vec<i64> = (0..n as i64).map(|i| (i * 5 + 1) % (sub.nodes[0].range.max + 1)).collect();
        let input = ck.encrypt(&vals, sub.input_shape(), plan.bits[0]);
        let name = format!("fhe_mnist fc1+act2, {label} ({} bootstraps)", sub.bootstrap_stats().total());
        let pc = ParametrizedCircuit::with_params(&sub, &setup.params, &plan).expect("plan");
        g.bench_function(name, |bch| bch.iter(|| evaluate(&sk, &pc, &input).expect("evaluate").data.len()));
    }
    g.finish();
}

criterion_group!(fhe, benches);
criterion_main!(fhe);
