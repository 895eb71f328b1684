//! Unit and property tests of the NN IR: shape rules, verifier, printer, interpreter.

use fhec_ir::nn::{Conv, Graph, Op, Pool, interp, print, verify};
use ndarray::{Array1, Array4, ArrayD, IxDyn};
use proptest::prelude::*;

fn conv(o: usize, i: usize, k: usize) -> Op {
    Op::Conv(Conv {
        weight: Array4::from_shape_fn((o, i, k, k), |(a, b, c, d)| ((a + 2 * b + 3 * c + 5 * d) % 7) as f32 - 3.0),
        bias: Some(Array1::from_shape_fn(o, |a| a as f32)),
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        groups: 1,
    })
}

#[test]
fn shapes_are_inferred_and_verified() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", vec![1, 2, 6, 6]);
    let c = g.add_op("c", conv(3, 2, 3), &[x]).unwrap();
    assert_eq!(g.node(c).shape, vec![1, 3, 4, 4]);
    let r = g.add_op("r", Op::Relu, &[c]).unwrap();
    let f = g.add_op_with_shape("f", Op::Reshape, &[r], &[1, 48]).unwrap();
    g.add_output(f);
    verify::verify(&g).unwrap();
    assert!(g.add_op("bad", conv(3, 5, 3), &[x]).is_err(), "channel mismatch must fail");
    assert!(g.add_op_with_shape("bad", Op::Reshape, &[r], &[1, 47]).is_err());
}

#[test]
fn verifier_rejects_a_wrong_declared_shape_and_nan_weights() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", vec![1, 4]);
    let d = g.add_op("d", Op::AddConst(ArrayD::from_elem(IxDyn(&[4]), 1.0)), &[x]).unwrap();
    g.add_output(d);
    g.node_mut(d).shape = vec![1, 5];
    let e = verify::verify(&g).unwrap_err().to_string();
    assert!(e.contains("node 'd' (add_const) declares shape [1, 5]"), "{e}");
    g.node_mut(d).shape = vec![1, 4];
    g.node_mut(d).op = Op::AddConst(ArrayD::from_elem(IxDyn(&[4]), f32::NAN));
    assert!(verify::verify(&g).unwrap_err().to_string().contains("NaN"));
}

#[test]
fn printer_is_stable_and_dead_nodes_go() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", vec![1, 3]);
    let a = g.add_op("a", Op::Square, &[x]).unwrap();
    let _dead = g.add_op("dead", Op::Tanh, &[x]).unwrap();
    let m = g.add_op("m", Op::Mul, &[a, x]).unwrap();
    g.add_output(m);
    assert_eq!(g.remove_dead_nodes(), 1);
    let text = print::print(&g);
    assert_eq!(
        text,
        "graph \"t\" {\n  %0 = input \"x\" : [1, 3]\n  %1 = square %0 \"a\" : [1, 3]\n  %2 = mul %1, %0 \"m\" : [1, 3]\n  output %2\n}\n"
    );
    assert_eq!(print::print(&g.clone()), text);
}

#[test]
fn fmt_f32_is_short_and_round_trips_six_digits() {
    assert_eq!(print::fmt_f32(1e-5), "1e-5");
    assert_eq!(print::fmt_f32(0.25), "0.25");
    assert_eq!(print::fmt_f32(-3.0), "-3");
    assert_eq!(print::fmt_f32(123456.7), "123457");
    assert_eq!(print::fmt_f32(0.0), "0");
}

/// Direct (non-im2col) convolution, for comparison.
fn naive_conv(x: &ArrayD<f32>, c: &Conv) -> ArrayD<f32> {
    let (n, _, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, ipg, kh, kw) = c.weight.dim();
    let g = c.groups;
    let geom = Pool { kernel: [kh, kw], strides: c.strides, pads: c.pads, dilations: c.dilations, ceil_mode: false };
    let [oh, ow] = geom.output_hw([h, w]).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[n, o, oh, ow]));
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / (o / g);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias.as_ref().map_or(0.0, |v| v[oc]);
                    for ic in 0..ipg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * c.strides[0] + ky * c.dilations[0]) as isize - c.pads[0] as isize;
                                let ix = (ox * c.strides[1] + kx * c.dilations[1]) as isize - c.pads[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc +=
                                        c.weight[[oc, ic, ky, kx]] * x[[b, grp * ipg + ic, iy as usize, ix as usize]];
                                }
                            }
                        }
                    }
                    y[[b, oc, oy, ox]] = acc;
                }
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv_matches_naive(
        g in 1usize..3, ipg in 1usize..3, opg in 1usize..3, k in 1usize..4,
        s in 1usize..3, d in 1usize..3, p in 0usize..3, h in 5usize..9, seed in 0u32..1000,
    ) {
        let (cin, o) = (g * ipg, g * opg);
        let c = Conv {
            weight: Array4::from_shape_fn((o, ipg, k, k), |(a, b, cc, dd)| (((a * 7 + b * 5 + cc * 3 + dd) as u32 ^ seed) % 11) as f32 / 5.0 - 1.0),
            bias: Some(Array1::from_shape_fn(o, |a| a as f32 * 0.5)),
            strides: [s, s], pads: [p, p + 1, p, 0], dilations: [d, d], groups: g,
        };
        let span = (k - 1) * d + 1;
        prop_assume!(h + 2 * p >= span && h + p >= span);
        let x = ArrayD::from_shape_fn(IxDyn(&[1, cin, h, h]), |i| ((i[1] * 31 + i[2] * 7 + i[3]) as u32 ^ seed) as f32 % 13.0 / 6.0 - 1.0);
        let op = Op::Conv(c.clone());
        let want = naive_conv(&x, &c);
        let got = interp::eval_op(&op, &[x.view()], &[]).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        for (a, b) in got.iter().zip(want.iter()) {
            prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn pool_windows_start_inside_the_input(len in 1usize..20, k in 1usize..5, s in 1usize..4, pb in 0usize..3, pe in 0usize..3, ceil in any::<bool>()) {
        prop_assume!(pb < k && pe < k);
        let p = Pool { kernel: [k, 1], strides: [s, 1], pads: [pb, 0, pe, 0], dilations: [1, 1], ceil_mode: ceil };
        if let Ok([n, _]) = p.output_hw([len, 1]) {
            // every window starts before the end of input + begin padding
            prop_assert!((n - 1) * s < len + pb);
            if !ceil { prop_assert!((n - 1) * s + k <= len + pb + pe); }
        }
    }
}
