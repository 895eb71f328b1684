//! The optimisation passes (`compiler::passes`).
//!
//! * a before/after snapshot of the textual NN IR for every pass and every rule group, on
//!   small fixtures per group, including fixtures the group must leave alone;
//! * semantic equivalence: the float interpreter before and after each pass gives the same
//!   outputs within 1e-4 (relative to the output scale) on random inputs (property tests;
//!   proptest keeps shrunk failures in `proptest-regressions/`, which are then named
//!   regression tests here) and on the real bundled images of every bundled model;
//!   `argmax-tail` keeps the argmax; `activations` is checked for what it promises;
//! * the driver: unknown passes, errors naming the pass, verification after every pass.

use fhec_compiler::passes::egraph::{CostParams, Limits};
use fhec_compiler::passes::{ActivationPolicy, PASS_NAMES, PassContext, PassError, PassKind, Pipeline, by_name};
use fhec_ir::nn::{Conv, Graph, Grid, NodeId, Op, Pool, Tensor, interp, print};
use fhec_runtime::dataset::bundled_sample;
use fhec_tests::*;
use ndarray::{Array1, Array2, Array4, IxDyn};
use proptest::prelude::*;

fn cx(calibration: Vec<Tensor>, activations: ActivationPolicy) -> PassContext {
    PassContext {
        calibration,
        cost: CostParams {
            input_bits: 8.0,
            weight_bits: 7.0,
            act_bits: 7.0,
            max_table_bits: 11.0,
            input_range: (0.0, 1.0),
            approximate: false,
        },
        activations,
        poly_degree: 2,
        limits: Limits::default(),
    }
}

/// Deterministic pseudo-random values in `[lo, hi)`.
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_vec(IxDyn(shape), values(shape.iter().product(), seed, lo, hi)).unwrap()
}

fn input_of(g: &Graph, seed: u64) -> Tensor {
    tensor(&g.node(g.inputs()[0]).shape, seed, 0.0, 1.0)
}

fn conv(o: usize, i: usize, k: usize, pads: usize, seed: u64) -> Op {
    Op::Conv(Conv {
        weight: Array4::from_shape_vec((o, i, k, k), values(o * i * k * k, seed, -1.0, 1.0)).unwrap(),
        bias: Some(Array1::from(values(o, seed + 1, -0.2, 0.2))),
        strides: [1, 1],
        pads: [pads; 4],
        dilations: [1, 1],
        groups: 1,
    })
}

fn dense(o: usize, i: usize, seed: u64) -> Op {
    Op::Dense {
        weight: Array2::from_shape_vec((o, i), values(o * i, seed, -1.0, 1.0)).unwrap(),
        bias: Some(Array1::from(values(o, seed + 1, -0.2, 0.2))),
    }
}

/// A chain: input `shape`, then the ops in order (each on the previous).
fn chain(name: &str, shape: &[usize], ops: Vec<(&str, Op)>) -> Graph {
    let mut g = Graph::new(name);
    let mut x = g.add_input("x", shape.to_vec());
    for (n, op) in ops {
        x = add(&mut g, n, op, &[x]);
    }
    g.add_output(x);
    g
}

fn add(g: &mut Graph, name: &str, op: Op, ins: &[NodeId]) -> NodeId {
    if op == Op::Reshape {
        let n: usize = g.node(ins[0]).shape.iter().product();
        return g.add_op_with_shape(name, op, ins, &[1, n]).unwrap();
    }
    g.add_op(name, op, ins).unwrap()
}

fn c(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    tensor(shape, seed, lo, hi)
}

fn grid(scale: f32, zp: i64, qmin: i64, qmax: i64) -> Grid {
    Grid { scale, zero_point: zp, qmin, qmax }
}

/// Fixtures per pass: (name, graph, the pass must change it).
fn fixtures(pass: &str) -> Vec<(&'static str, Graph, bool)> {
    let img = [1, 2, 6, 6];
    let relu6 = Op::Clip { min: Some(0.0), max: Some(6.0) };
    match pass {
        "canonical-activations" => {
            let mut g = Graph::new("square_of_mul");
            let x = g.add_input("x", vec![1, 8]);
            let d = add(&mut g, "fc", dense(8, 8, 1), &[x]);
            let m = add(&mut g, "mul", Op::Mul, &[d, d]);
            let o = add(&mut g, "fc2", dense(3, 8, 2), &[m]);
            g.add_output(o);
            let mut h = Graph::new("mul_of_two_values");
            let x = h.add_input("x", vec![1, 8]);
            let a = add(&mut h, "fc_a", dense(8, 8, 3), &[x]);
            let b = add(&mut h, "fc_b", dense(8, 8, 4), &[x]);
            let m = add(&mut h, "mul", Op::Mul, &[a, b]);
            h.add_output(m);
            vec![
                ("square_of_mul", g, true),
                (
                    "relu_forms",
                    chain(
                        "relu_forms",
                        &[1, 8],
                        vec![
                            ("fc", dense(8, 8, 5)),
                            ("clip0", Op::Clip { min: Some(0.0), max: None }),
                            ("fc2", dense(8, 8, 6)),
                            ("leaky0", Op::LeakyRelu { alpha: 0.0 }),
                            ("fc3", dense(8, 8, 7)),
                            ("leaky1", Op::LeakyRelu { alpha: 1.0 }),
                            ("prelu", Op::PRelu(Tensor::from_elem(IxDyn(&[8]), 0.1))),
                        ],
                    ),
                    true,
                ),
                (
                    "redundant_relus",
                    chain(
                        "redundant_relus",
                        &[1, 8],
                        vec![
                            ("fc", dense(8, 8, 8)),
                            ("relu", Op::Relu),
                            ("relu_again", Op::Relu),
                            ("relu6", relu6.clone()),
                        ],
                    ),
                    true,
                ),
                ("mul_of_two_values", h, false),
                (
                    "other_activations",
                    chain(
                        "other_activations",
                        &[1, 8],
                        vec![
                            ("fc", dense(8, 8, 9)),
                            ("clip", Op::Clip { min: Some(-1.0), max: Some(1.0) }),
                            ("leaky", Op::LeakyRelu { alpha: 0.1 }),
                            ("prelu", Op::PRelu(c(&[8], 10, 0.0, 0.3))),
                        ],
                    ),
                    false,
                ),
            ]
        }
        "fuse-requant" => vec![
            (
                "requant_after_relu",
                chain(
                    "requant_after_relu",
                    &[1, 8],
                    vec![
                        ("fc", dense(8, 8, 11)),
                        ("relu", Op::Relu),
                        ("q", Op::FakeQuant(grid(0.1, 0, 0, 15))),
                        ("relu2", Op::Relu),
                        ("q2", Op::FakeQuant(grid(0.1, 0, 0, 15))),
                    ],
                ),
                true,
            ),
            (
                "clip_covering_grid",
                chain(
                    "clip_covering_grid",
                    &[1, 8],
                    vec![
                        ("fc", dense(8, 8, 12)),
                        ("clip", Op::Clip { min: Some(-1.0), max: Some(10.0) }),
                        ("q", Op::FakeQuant(grid(0.25, 0, 0, 31))),
                    ],
                ),
                true,
            ),
            (
                "signed_grid_and_narrow_clip",
                chain(
                    "signed_grid_and_narrow_clip",
                    &[1, 8],
                    vec![
                        ("fc", dense(8, 8, 13)),
                        ("relu", Op::Relu),
                        ("q", Op::FakeQuant(grid(0.1, 8, 0, 15))),
                        ("fc2", dense(8, 8, 14)),
                        ("clip", Op::Clip { min: Some(0.0), max: Some(1.0) }),
                        ("q2", Op::FakeQuant(grid(0.25, 0, 0, 15))),
                    ],
                ),
                false,
            ),
        ],
        "fold-affine" => {
            let bn = |ch: usize, seed: u64| Op::BatchNorm {
                scale: Array1::from(values(ch, seed, 0.5, 1.5)),
                bias: Array1::from(values(ch, seed + 1, -0.5, 0.5)),
                mean: Array1::from(values(ch, seed + 2, -0.5, 0.5)),
                var: Array1::from(values(ch, seed + 3, 0.5, 2.0)),
                epsilon: 1e-5,
            };
            vec![
                (
                    "conv_bn",
                    chain("conv_bn", &img, vec![("conv", conv(3, 2, 3, 1, 20)), ("bn", bn(3, 21)), ("relu", Op::Relu)]),
                    true,
                ),
                (
                    "normalised_input",
                    chain(
                        "normalised_input",
                        &img,
                        vec![
                            ("sub_mean", Op::AddConst(c(&[2, 1, 1], 22, -0.5, -0.1))),
                            ("div_std", Op::MulConst(c(&[2, 1, 1], 23, 2.0, 4.0))),
                            ("conv", conv(3, 2, 3, 0, 24)),
                            ("relu", Op::Relu),
                        ],
                    ),
                    true,
                ),
                (
                    "bn_before_flatten_dense",
                    chain(
                        "bn_before_flatten_dense",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 0, 25)),
                            ("relu", Op::Relu),
                            ("bn", bn(3, 26)),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 48, 27)),
                            ("scale", Op::MulConst(c(&[4], 28, 0.5, 2.0))),
                            ("shift", Op::AddConst(c(&[4], 29, -1.0, 1.0))),
                        ],
                    ),
                    true,
                ),
                (
                    "shift_before_padded_conv",
                    chain(
                        "shift_before_padded_conv",
                        &img,
                        vec![
                            ("shift", Op::AddConst(c(&[2, 1, 1], 30, -0.5, 0.5))),
                            ("conv", conv(3, 2, 3, 1, 31)),
                            ("per_pixel", Op::MulConst(c(&[1, 1, 6, 6], 32, 0.5, 1.5))),
                            ("relu", Op::Relu),
                        ],
                    ),
                    false,
                ),
            ]
        }
        "merge-linear" => vec![
            (
                "dense_dense",
                chain("dense_dense", &[1, 16], vec![("fc1", dense(8, 16, 40)), ("fc2", dense(4, 8, 41))]),
                true,
            ),
            (
                "dense_relu_dense",
                chain(
                    "dense_relu_dense",
                    &[1, 16],
                    vec![("fc1", dense(8, 16, 42)), ("relu", Op::Relu), ("fc2", dense(4, 8, 43))],
                ),
                false,
            ),
        ],
        "sum-pooling" => {
            let pool =
                Pool { kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil_mode: false };
            vec![
                (
                    "avg_pool_padded",
                    chain(
                        "avg_pool_padded",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 1, 50)),
                            ("relu", Op::Relu),
                            ("avg", Op::AvgPool { pool: pool.clone(), count_include_pad: false }),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 27, 51)),
                        ],
                    ),
                    true,
                ),
                (
                    "global_avg_pool",
                    chain(
                        "global_avg_pool",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 0, 52)),
                            ("relu", Op::Relu),
                            ("gap", Op::GlobalAvgPool),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 3, 53)),
                        ],
                    ),
                    true,
                ),
                (
                    "max_pool",
                    chain(
                        "max_pool",
                        &img,
                        vec![("conv", conv(3, 2, 3, 0, 54)), ("relu", Op::Relu), ("max", Op::MaxPool(pool))],
                    ),
                    false,
                ),
            ]
        }
        "max-pool-order" => {
            let pool =
                Pool { kernel: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil_mode: false };
            vec![
                (
                    // Exact rounding: comparing the wide accumulator costs rounding bootstraps,
                    // so the activation moves before the pooling.
                    "pool_then_relu",
                    chain(
                        "pool_then_relu",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 0, 55)),
                            ("max", Op::MaxPool(pool.clone())),
                            ("relu", Op::Relu),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 12, 56)),
                        ],
                    ),
                    true,
                ),
                (
                    // A leaky ReLU of negative slope is not monotone: the order stays.
                    "pool_then_negative_leaky",
                    chain(
                        "pool_then_negative_leaky",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 0, 57)),
                            ("max", Op::MaxPool(pool.clone())),
                            ("leaky", Op::LeakyRelu { alpha: -0.5 }),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 12, 58)),
                        ],
                    ),
                    false,
                ),
                (
                    "square_then_pool",
                    chain(
                        "square_then_pool",
                        &img,
                        vec![
                            ("conv", conv(3, 2, 3, 0, 59)),
                            ("square", Op::Square),
                            ("max", Op::MaxPool(pool)),
                            ("flatten", Op::Reshape),
                            ("fc", dense(4, 12, 65)),
                        ],
                    ),
                    false,
                ),
            ]
        }
        "argmax-tail" => vec![
            (
                "softmax_tail",
                chain("softmax_tail", &[1, 16], vec![("fc", dense(10, 16, 60)), ("softmax", Op::Softmax { axis: 1 })]),
                true,
            ),
            (
                "scaled_log_softmax_tail",
                chain(
                    "scaled_log_softmax_tail",
                    &[1, 16],
                    vec![
                        ("fc", dense(10, 16, 61)),
                        ("log_softmax", Op::LogSoftmax { axis: 1 }),
                        ("scale", Op::MulConst(Tensor::from_elem(IxDyn(&[1]), 2.0))),
                        ("shift", Op::AddConst(Tensor::from_elem(IxDyn(&[10]), 0.5))),
                    ],
                ),
                true,
            ),
            (
                "argmax_changing_tail",
                chain(
                    "argmax_changing_tail",
                    &[1, 16],
                    vec![
                        ("fc", dense(10, 16, 62)),
                        ("softmax", Op::Softmax { axis: 1 }),
                        ("fc2", dense(10, 10, 63)),
                        ("negate", Op::MulConst(Tensor::from_elem(IxDyn(&[1]), -1.0))),
                        ("bias", Op::AddConst(c(&[10], 64, -1.0, 1.0))),
                    ],
                ),
                false,
            ),
        ],
        _ => vec![],
    }
}

/// Every rule group (each pass but `declutter`, which runs them all, and `activations`,
/// tested on its own); each must have fixtures.
fn groups() -> Vec<&'static str> {
    PassKind::ALL.into_iter().filter(|k| k.is_rule_group()).map(PassKind::name).collect()
}

fn run_pass(pass: &str, g: &Graph, c: &PassContext) -> (Graph, Vec<String>) {
    let p = by_name(pass).unwrap();
    let (out, notes) = p.run(g, c).unwrap_or_else(|e| panic!("{pass} on {}: {e}", g.name));
    fhec_ir::nn::verify::verify(&out).unwrap();
    (out, notes)
}

/// `|a - b| <= 1e-4 * max(1, max |a|)` for every output.
fn assert_close(a: &[Tensor], b: &[Tensor], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape(), "{what}: output shape");
        let scale = x.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = x.iter().zip(y.iter()).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-4 * scale, "{what}: outputs differ by {err} (scale {scale})");
    }
}

fn argmax(t: &Tensor) -> usize {
    t.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

fn assert_equivalent(pass: &str, before: &Graph, after: &Graph, x: &Tensor, what: &str) {
    let a = interp::run(before, std::slice::from_ref(x)).unwrap();
    let b = interp::run(after, std::slice::from_ref(x)).unwrap();
    let last = &before.node(before.outputs()[0]).op;
    let tail = matches!(last, Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::MulConst(_) | Op::AddConst(_));
    if pass == "argmax-tail" || (pass == "declutter" && tail) {
        assert_eq!(a.iter().map(argmax).collect::<Vec<_>>(), b.iter().map(argmax).collect::<Vec<_>>(), "{what}");
    } else {
        assert_close(&a, &b, what);
    }
}

#[test]
fn every_rule_group_has_fixtures_and_snapshots() {
    let c = cx(vec![], ActivationPolicy::Table);
    let groups = groups();
    for &group in groups.iter().chain(&["declutter"]) {
        let fx: Vec<_> =
            if group == "declutter" { groups.iter().flat_map(|g| fixtures(g)).collect() } else { fixtures(group) };
        assert!(fx.iter().any(|f| f.2) && fx.iter().any(|f| !f.2), "{group}: fixtures that change and that must not");
        let mut snap = String::new();
        for (name, g, changes) in fx {
            let (out, notes) = run_pass(group, &g, &c);
            let (pb, pa) = (print::print(&g), print::print(&out));
            if group != "declutter" {
                assert_eq!(
                    pb != pa,
                    changes,
                    "{group} on {name}: expected {}",
                    if changes { "a change" } else { "no change" }
                );
            }
            snap += &format!("=== {name}\n--- before\n{pb}--- after ({})\n{pa}", notes[0]);
        }
        insta::assert_snapshot!(PassKind::from_name(group).unwrap().snapshot(), snap);
    }
}

#[test]
fn max_pool_order_follows_the_rounding_mode() {
    // The same two orders under both cost models: exact rounding puts the activation first,
    // approximate rounding (comparisons read the top bits of a difference) the pooling.
    let pool = Pool { kernel: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil_mode: false };
    let order = |first: (&'static str, Op), second: (&'static str, Op)| {
        chain("order", &[1, 2, 6, 6], vec![("conv", conv(3, 2, 3, 0, 66)), first, second])
    };
    let relu_first = order(("relu", Op::Relu), ("max", Op::MaxPool(pool.clone())));
    let pool_first = order(("max", Op::MaxPool(pool)), ("relu", Op::Relu));
    let ops = |g: &Graph| -> Vec<&'static str> {
        g.topo_order().unwrap().into_iter().map(|id| g.node(id).op.name()).filter(|n| *n != "input").collect()
    };
    for (approximate, want) in [(false, &relu_first), (true, &pool_first)] {
        let mut c = cx(vec![], ActivationPolicy::Table);
        c.cost.approximate = approximate;
        for g in [&relu_first, &pool_first] {
            let (out, _) = run_pass("max-pool-order", g, &c);
            assert_eq!(ops(&out), ops(want), "approximate = {approximate}");
            assert_equivalent("max-pool-order", g, &out, &input_of(g, 67), "max-pool-order");
        }
    }
}

#[test]
fn activations_pass_policies() {
    // A ReLU whose input is always positive (auto: linear, free), one that is not (kept),
    // a square (kept by every policy).
    let mut g = Graph::new("activations");
    let x = g.add_input("x", vec![1, 8]);
    let pos = Op::Dense { weight: Array2::from_elem((8, 8), 0.25), bias: Some(Array1::from_elem(8, 0.1)) };
    let a = add(&mut g, "fc_pos", pos, &[x]);
    let r = add(&mut g, "relu_pos", Op::Relu, &[a]);
    let b = add(&mut g, "fc_mixed", dense(8, 8, 70), &[r]);
    let r2 = add(&mut g, "relu_mixed", Op::Relu, &[b]);
    let s = add(&mut g, "square", Op::Square, &[r2]);
    let t = add(&mut g, "tanh", Op::Tanh, &[s]);
    g.add_output(t);
    let cal: Vec<Tensor> = (0..16).map(|i| input_of(&g, 100 + i)).collect();
    let mut snap = String::new();
    for policy in [ActivationPolicy::Table, ActivationPolicy::Auto, ActivationPolicy::Poly] {
        let (out, notes) = run_pass("activations", &g, &cx(cal.clone(), policy));
        let ops: Vec<&str> = out.topo_order().unwrap().into_iter().map(|id| out.node(id).op.name()).collect();
        match policy {
            ActivationPolicy::Table => assert_eq!(print::print(&out), print::print(&g)),
            ActivationPolicy::Auto => {
                assert_eq!(ops.iter().filter(|&&o| o == "poly").count(), 1, "only the always-positive ReLU: {ops:?}");
                assert!(ops.contains(&"relu") && ops.contains(&"square") && ops.contains(&"tanh"));
                // Linear where the images drive it: exact on calibration-like inputs.
                for x in &cal {
                    assert_close(
                        &interp::run(&g, std::slice::from_ref(x)).unwrap(),
                        &interp::run(&out, std::slice::from_ref(x)).unwrap(),
                        "auto",
                    );
                }
                // ... and free once declutter folds it.
                let (d, _) = run_pass("declutter", &out, &cx(vec![], policy));
                let n = |gr: &Graph, k: &str| gr.node_ids().into_iter().filter(|&i| gr.node(i).op.name() == k).count();
                assert_eq!(n(&d, "poly") + n(&d, "relu"), 1, "{}", print::print(&d));
            }
            ActivationPolicy::Poly => {
                assert!(!ops.contains(&"relu") && !ops.contains(&"tanh"), "{ops:?}");
                assert!(ops.contains(&"square"), "squares stay");
            }
        }
        snap += &format!("=== {policy}\n{}\n{}", notes.join("\n"), print::print(&out));
    }
    insta::assert_snapshot!("pass_activations", snap);
}

#[test]
fn polynomial_fit_is_least_squares_on_the_range() {
    use fhec_compiler::passes::activations::{eval, fit};
    // A quadratic is fitted exactly, in x (not in the rescaled variable).
    let (c, err) = fit(&|x| 3.0 - 2.0 * x + 0.5 * x * x, -4.0, 10.0, 2);
    assert!(err < 1e-9 && (c[0] - 3.0).abs() < 1e-9 && (c[1] + 2.0).abs() < 1e-9 && (c[2] - 0.5).abs() < 1e-9, "{c:?}");
    // ReLU on [-1, 1], degree 2 (least squares: 3/32 + x/2 + 15x²/32): within 0.1 everywhere.
    let (c, err) = fit(&|x: f64| x.max(0.0), -1.0, 1.0, 2);
    assert!(err < 0.1 && (eval(&c, 1.0) - 1.0).abs() < 0.1 && eval(&c, -1.0).abs() < 0.1, "{c:?} {err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Every pass (each rule group alone and all together) keeps the float semantics of
    /// every fixture on random inputs.
    #[test]
    fn passes_preserve_semantics_on_random_inputs(seed in 0u64..1_000_000) {
        let c = cx(vec![], ActivationPolicy::Table);
        for group in groups() {
            for (name, g, _) in fixtures(group) {
                for pass in [group, "declutter"] {
                    let (out, _) = run_pass(pass, &g, &c);
                    let x = input_of(&g, seed);
                    assert_equivalent(pass, &g, &out, &x, &format!("{pass} on {name}, seed {seed}"));
                }
            }
        }
    }
}

#[test]
fn default_pipeline_preserves_every_bundled_model_on_real_and_random_images() {
    for b in bundled_models() {
        let g = import(&b.path).unwrap();
        let ds = bundled_sample(b.dataset);
        let shape = g.node(g.inputs()[0]).shape.clone();
        let real: Vec<Tensor> = (0..20).map(|i| ds.input(i, b.preprocess, &shape)).collect();
        for pass in PASS_NAMES {
            let c = cx(real.clone(), ActivationPolicy::Table);
            let (out, _) = run_pass(pass, &g, &c);
            for (i, x) in real.iter().enumerate() {
                assert_equivalent(pass, &g, &out, x, &format!("{pass} on {}, image {i}", stem(&b.path)));
            }
            let pixels: Vec<u8> = values(shape.iter().product(), 7, 0.0, 255.0).iter().map(|&v| v as u8).collect();
            let x =
                Tensor::from_shape_vec(IxDyn(&shape), pixels.iter().map(|&p| b.preprocess.apply(p)).collect()).unwrap();
            assert_equivalent(pass, &g, &out, &x, &format!("{pass} on {}, random image", stem(&b.path)));
        }
    }
}

#[test]
fn pipeline_names_the_pass_in_errors_and_verifies() {
    match Pipeline::parse("declutter,no-such-pass") {
        Err(PassError::Unknown { name, known }) => {
            assert_eq!(name, "no-such-pass");
            assert!(known.contains("fold-affine"));
        }
        other => panic!("{:?}", other.map(|p| p.names())),
    }
    assert!(Pipeline::parse("none").unwrap().names().is_empty());
    assert_eq!(Pipeline::default_pipeline().names(), vec!["activations", "declutter"]);
    // The activations pass without calibration inputs: an error that names it.
    let g = chain("relu", &[1, 4], vec![("fc", dense(4, 4, 80)), ("relu", Op::Relu)]);
    let err = Pipeline::parse("declutter,activations")
        .unwrap()
        .run(&g, &cx(vec![], ActivationPolicy::Poly), &mut |_, _, _| {})
        .unwrap_err();
    assert!(matches!(&err, PassError::Failed { pass, .. } if pass == "activations"), "{err}");
    assert!(err.to_string().contains("pass 'activations'"), "{err}");
    // The callback sees every pass in order.
    let mut seen = vec![];
    Pipeline::parse("fold-affine,declutter")
        .unwrap()
        .run(&g, &cx(vec![], ActivationPolicy::Table), &mut |p, _, _| seen.push(p.to_string()))
        .unwrap();
    assert_eq!(seen, vec!["fold-affine", "declutter"]);
}

/// The extraction's cost model must price what lowering builds: on every bundled model, at
/// its default widths under both rounding modes, the default pipeline never yields a
/// circuit whose bootstraps, weighted by the width each reads ([`fhec_ir::cost::width_weight`]),
/// cost more than the circuit without passes. (A max pooling moved before its activation
/// under exact rounding once compared 21-bit differences, priced as rounded 11-bit reads.)
#[test]
fn the_default_pipeline_never_makes_a_bundled_model_costlier() {
    use fhec_compiler::build::{BuildOptions, build_graph};
    use fhec_compiler::quantize::{QuantOptions, Rounding};
    use fhec_ir::cost::width_weight;
    for b in bundled_models() {
        let g = import(&b.path).unwrap();
        let ds = bundled_sample(b.dataset);
        let imgs: Vec<&[u8]> = (0..ds.len().min(100)).map(|i| ds.pixels(i)).collect();
        for rounding in [Rounding::Exact, Rounding::Approximate] {
            let weighted = |pipeline: &[&str]| {
                let mut o = BuildOptions {
                    quant: Some(QuantOptions { rounding, ..QuantOptions::for_model(&g).unwrap() }),
                    preprocess: Some(b.preprocess),
                    ..BuildOptions::default()
                };
                o.passes.pipeline = pipeline.iter().map(|s| s.to_string()).collect();
                let st = build_graph(&g, "m", &imgs, &o).unwrap().circuit.bootstrap_stats();
                let tables: f64 = st.by_width.iter().map(|(&w, &n)| n as f64 * width_weight(w as f64)).sum();
                (tables + st.rounding as f64, st.max_width())
            };
            let (before, wb) = weighted(&[]);
            let (after, wa) = weighted(fhec_compiler::passes::DEFAULT_PIPELINE);
            assert!(
                after <= before * 1.02,
                "{} ({rounding:?}): passes raise the weighted bootstraps {before:.0} -> {after:.0} (widest read {wb} -> {wa} bits)",
                b.path.display()
            );
        }
    }
}
