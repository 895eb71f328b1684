//! Pass `activations`: polynomial substitution of activations.
//!
//! **Establishes**, by policy (`--activations`):
//! * `table`: nothing changes; every activation stays an exact function in its table.
//! * `poly`: every ReLU, LeakyReLU, PReLU, sigmoid, tanh, hard sigmoid and Clip becomes
//!   `poly` of degree `--poly-degree`, the **least-squares** fit to the activation over
//!   the values its input takes on the calibration images (up to 50,000 of them, so the
//!   fit is weighted by where the images drive it; the variable is rescaled from the
//!   calibrated range to `[-1, 1]` before the normal equations). Squares are polynomials
//!   already and stay. A uniform-grid fit on the range (the plain `fit`) was tried first:
//!   ReLU networks fell to 10-20% (degree 2), because most inputs sit near 0 where a
//!   range-wide fit is worst.
//! * `auto`: the cost model chooses per activation. In TFHE any univariate function of one
//!   ciphertext costs one table lookup, so a polynomial of degree >= 2 is never cheaper
//!   than the exact table and is less accurate; a polynomial of degree <= 1 is free (it
//!   folds into the neighbouring linear op). `auto` therefore replaces an activation by its
//!   linear fit (uniform grid on the calibrated range widened by 10% on each side) when
//!   the fit's worst error there is below half an output
//!   step of the table (`span / 2^(act_bits + 1)`), i.e. when the activation is linear
//!   where the images drive it (a ReLU whose input stays positive), and keeps the table
//!   otherwise.
//!
//! **Expects:** a verified NN graph and calibration inputs. **Options:** policy, degree.
//! Approximate by design (`poly`), within half a quantization step on the calibrated
//! range (`auto`); the accuracy effect is reported in `BENCHMARKS.md` (section `passes`).

use fhec_ir::nn::{Graph, Op, interp};

use super::{Pass, PassContext, PassFailure, PassNotes};

/// Which activations the pass replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationPolicy {
    /// Keep every activation as an exact table.
    #[default]
    Table,
    /// Replace every non-polynomial activation by a fitted polynomial.
    Poly,
    /// Replace an activation by its linear fit where that is exact to half a step.
    Auto,
}

/// An activation policy that is not `table`, `poly` or `auto`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown activation policy '{0}' (expected table, poly or auto)")]
pub struct UnknownActivationPolicy(pub String);

impl std::str::FromStr for ActivationPolicy {
    type Err = UnknownActivationPolicy;
    fn from_str(s: &str) -> Result<Self, UnknownActivationPolicy> {
        match s {
            "table" => Ok(ActivationPolicy::Table),
            "poly" => Ok(ActivationPolicy::Poly),
            "auto" => Ok(ActivationPolicy::Auto),
            _ => Err(UnknownActivationPolicy(s.into())),
        }
    }
}

impl std::fmt::Display for ActivationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActivationPolicy::Table => "table",
            ActivationPolicy::Poly => "poly",
            ActivationPolicy::Auto => "auto",
        })
    }
}

/// The pass.
pub struct Activations;

/// Input values kept per activation for the `poly` fit.
const SAMPLES: usize = 50_000;

/// Whether `op` is an activation this pass may replace.
fn replaceable(op: &Op) -> bool {
    matches!(
        op,
        Op::Relu
            | Op::LeakyRelu { .. }
            | Op::PRelu(_)
            | Op::Sigmoid
            | Op::Tanh
            | Op::HardSigmoid { .. }
            | Op::Clip { .. }
    )
}

/// The scalar function of an activation (PReLU only with one slope).
fn scalar_fn(op: &Op) -> Option<Box<dyn Fn(f64) -> f64>> {
    Some(match op {
        Op::Relu => Box::new(|x: f64| x.max(0.0)),
        Op::LeakyRelu { alpha } => {
            let a = *alpha as f64;
            Box::new(move |x: f64| if x >= 0.0 { x } else { a * x })
        }
        Op::PRelu(s) => {
            let a = *s.iter().next()? as f64;
            if s.iter().any(|&v| v as f64 != a) {
                return None;
            }
            Box::new(move |x: f64| if x >= 0.0 { x } else { a * x })
        }
        Op::Sigmoid => Box::new(|x: f64| 1.0 / (1.0 + (-x).exp())),
        Op::Tanh => Box::new(|x: f64| x.tanh()),
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (*alpha as f64, *beta as f64);
            Box::new(move |x: f64| (a * x + b).clamp(0.0, 1.0))
        }
        Op::Clip { min, max } => {
            let (lo, hi) = (min.map_or(f64::NEG_INFINITY, |v| v as f64), max.map_or(f64::INFINITY, |v| v as f64));
            Box::new(move |x: f64| x.clamp(lo, hi))
        }
        _ => return None,
    })
}

/// Least-squares polynomial of `degree` for `f` on `[lo, hi]`: coefficients in `x`,
/// increasing degree, and the worst error on the fitting grid.
pub fn fit(f: &dyn Fn(f64) -> f64, lo: f64, hi: f64, degree: usize) -> (Vec<f64>, f64) {
    let n = 1025;
    let xs: Vec<f64> = (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect();
    fit_points(f, &xs, lo, hi, degree)
}

/// Least-squares polynomial of `degree` for `f` at the points `xs` (inside `[lo, hi]`,
/// which sets the rescaling): coefficients in `x`, and the worst error at the points.
pub fn fit_points(f: &dyn Fn(f64) -> f64, xs: &[f64], lo: f64, hi: f64, degree: usize) -> (Vec<f64>, f64) {
    let (mid, half) = ((lo + hi) / 2.0, ((hi - lo) / 2.0).max(1e-12));
    let d = degree + 1;
    // Normal equations in u = (x - mid) / half, u in [-1, 1].
    let mut a = vec![vec![0.0; d + 1]; d];
    for &x in xs {
        let u = (x - mid) / half;
        let y = f(x);
        let pw: Vec<f64> = (0..d).map(|k| u.powi(k as i32)).collect();
        for r in 0..d {
            for c in 0..d {
                a[r][c] += pw[r] * pw[c];
            }
            a[r][d] += pw[r] * y;
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..d {
        let piv = (col..d).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, piv);
        let p = a[col][col];
        if p.abs() < 1e-300 {
            continue;
        }
        for r in 0..d {
            if r != col {
                let k = a[r][col] / p;
                for c in col..=d {
                    a[r][c] -= k * a[col][c];
                }
            }
        }
    }
    let cu: Vec<f64> = (0..d).map(|k| if a[k][k].abs() < 1e-300 { 0.0 } else { a[k][d] / a[k][k] }).collect();
    // Back to x: sum_k cu_k ((x - mid) / half)^k, expanded binomially.
    let mut cx = vec![0.0; d];
    for (k, &c) in cu.iter().enumerate() {
        let s = c / half.powi(k as i32);
        for j in 0..=k {
            cx[j] += s * binom(k, j) * (-mid).powi((k - j) as i32);
        }
    }
    let err = xs.iter().map(|&x| (eval(&cx, x) - f(x)).abs()).fold(0.0, f64::max);
    (cx, err)
}

fn binom(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Evaluates a polynomial (increasing degree) at `x`.
pub fn eval(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

impl Pass for Activations {
    fn name(&self) -> &'static str {
        "activations"
    }

    fn run(&self, g: &Graph, cx: &PassContext) -> Result<(Graph, PassNotes), PassFailure> {
        let mut out = g.clone();
        let mut notes = vec![format!("policy: {}", cx.activations)];
        if cx.activations == ActivationPolicy::Table {
            return Ok((out, notes));
        }
        if cx.calibration.is_empty() {
            return Err(PassFailure::NoCalibration);
        }
        let order = g.topo_order().ok_or(PassFailure::Cycle)?;
        let targets: Vec<_> = order.into_iter().filter(|&id| replaceable(&g.node(id).op)).collect();
        let squares = g.node_ids().into_iter().filter(|&id| g.node(id).op == Op::Square).count();
        if targets.is_empty() {
            notes.push(format!("no activation to replace ({squares} square(s) kept as polynomials)"));
            return Ok((out, notes));
        }
        // Calibrated input range of every target, and a sample of its input values.
        let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); targets.len()];
        let mut samples: Vec<Vec<f64>> = vec![vec![]; targets.len()];
        for x in &cx.calibration {
            let vals = interp::run_all(g, std::slice::from_ref(x)).map_err(|e| PassFailure::Calibration(e.0))?;
            for ((r, smp), &id) in ranges.iter_mut().zip(&mut samples).zip(&targets) {
                let input = &vals[&g.inputs_of(id)[0]];
                let stride = (input.len() * cx.calibration.len()).div_ceil(SAMPLES).max(1);
                for (i, &v) in input.iter().enumerate() {
                    if v.is_finite() {
                        r.0 = r.0.min(v as f64);
                        r.1 = r.1.max(v as f64);
                        if i % stride == 0 {
                            smp.push(v as f64);
                        }
                    }
                }
            }
        }
        let (mut replaced, mut kept) = (0, 0);
        for ((&id, &(lo, hi)), smp) in targets.iter().zip(&ranges).zip(&samples) {
            let node = g.node(id);
            let Some(f) = scalar_fn(&node.op) else {
                kept += 1;
                notes.push(format!("{} '{}': per-channel slopes, kept as a table", node.op.name(), node.name));
                continue;
            };
            if lo > hi {
                kept += 1;
                continue;
            }
            let m = 0.1 * (hi - lo);
            let (lo, hi) = (lo - m, hi + m);
            let span = {
                let ys: Vec<f64> = (0..=256).map(|i| f(lo + (hi - lo) * i as f64 / 256.0)).collect();
                ys.iter().copied().fold(f64::NEG_INFINITY, f64::max) - ys.iter().copied().fold(f64::INFINITY, f64::min)
            };
            let (coeffs, err) = match cx.activations {
                ActivationPolicy::Poly => {
                    let (c, _) = fit_points(&*f, smp, lo, hi, cx.poly_degree);
                    let err = smp.iter().map(|&x| (eval(&c, x) - f(x)).abs()).fold(0.0, f64::max);
                    (c, err)
                }
                _ => {
                    let (c, e) = fit(&*f, lo, hi, 1);
                    let tol = span / (cx.cost.act_bits + 1.0).exp2();
                    if e > tol {
                        kept += 1;
                        continue;
                    }
                    (c, e)
                }
            };
            notes.push(format!(
                "{} '{}' on [{:.4}, {:.4}] -> degree-{} polynomial, max error {:.3e} ({:.2}% of its range)",
                node.op.name(),
                node.name,
                lo,
                hi,
                coeffs.len() - 1,
                err,
                if span > 0.0 { 100.0 * err / span } else { 0.0 }
            ));
            out.node_mut(id).op = Op::Poly(coeffs.iter().map(|&c| c as f32).collect());
            replaced += 1;
        }
        notes.push(format!("{replaced} activation(s) replaced, {kept} kept as tables, {squares} square(s) kept"));
        Ok((out, notes))
    }
}
