//! The NN IR as an e-graph language (egg), its analysis, and the round trip.
//!
//! **Language.** Every op of the NN IR is one e-node whose first child is a `Param` leaf
//! (`p12`): an index into [`NnAnalysis::params`], which owns the op with its weights, its
//! node name (provenance) and its output shape. The remaining children are the op's
//! computed inputs. The kind of the e-node (`conv`, `relu`, ...) mirrors the param's op so
//! that rules can be written as patterns (`(fq ?p (relu ?q ?x))`) and decide with the
//! payload in a condition. Graph outputs are `(out x)` nodes under one `outputs` root.
//!
//! **Analysis.** Each e-class knows its shape, a per-tensor interval of its float values
//! (interval arithmetic from the input's pixel range; used for widths) and `bits`, the
//! estimated width of the integer that lowering will hold for it (see [`cost`]).
//!
//! **Rules.** A rule is a pattern plus an applier closure that builds the equivalent
//! expression (new params with folded weights) or declines. Appliers are memoised per
//! match so that a rule that creates fresh params does not fire again on the same match.

pub mod cost;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use egg::{Analysis, DidMerge, EGraph, Extractor, Id, Language, Pattern, RecExpr, Rewrite, Runner, Subst, Symbol, Var};
use fhec_ir::nn::{Graph, NodeId, Op, Shape};

use super::PassFailure;

/// Index of a param (an op with its weights, name and shape) in [`NnAnalysis::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(pub u32);

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Text that is not a param leaf (`p12`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a param: {0}")]
pub struct NotAParam(pub String);

impl FromStr for ParamId {
    type Err = NotAParam;
    fn from_str(s: &str) -> Result<Self, NotAParam> {
        s.strip_prefix('p').and_then(|n| n.parse().ok()).map(ParamId).ok_or_else(|| NotAParam(s.into()))
    }
}

egg::define_language! {
    /// The e-graph language of the NN IR (see the module doc): one variant per NN op
    /// (first child: its param leaf), `out` / `outputs` for the graph outputs, `Param` leaves.
    #[allow(missing_docs)]
    pub enum Nn {
        "input" = Input([Id; 1]),
        "conv" = Conv([Id; 2]),
        "dense" = Dense([Id; 2]),
        "addc" = AddConst([Id; 2]),
        "mulc" = MulConst([Id; 2]),
        "add" = Add([Id; 3]),
        "sub" = Sub([Id; 3]),
        "mul" = Mul([Id; 3]),
        "relu" = Relu([Id; 2]),
        "leaky" = LeakyRelu([Id; 2]),
        "prelu" = PRelu([Id; 2]),
        "sigmoid" = Sigmoid([Id; 2]),
        "tanh" = Tanh([Id; 2]),
        "hsig" = HardSigmoid([Id; 2]),
        "clip" = Clip([Id; 2]),
        "square" = Square([Id; 2]),
        "bn" = BatchNorm([Id; 2]),
        "maxpool" = MaxPool([Id; 2]),
        "avgpool" = AvgPool([Id; 2]),
        "gap" = GlobalAvgPool([Id; 2]),
        "sumpool" = SumPool([Id; 2]),
        "poly" = Poly([Id; 2]),
        "fq" = FakeQuant([Id; 2]),
        "pad" = Pad([Id; 2]),
        "reshape" = Reshape([Id; 2]),
        "transpose" = Transpose([Id; 2]),
        "softmax" = Softmax([Id; 2]),
        "logsoftmax" = LogSoftmax([Id; 2]),
        "out" = Out(Id),
        "outputs" = Outputs(Box<[Id]>),
        Param(ParamId),
    }
}

/// The e-node of `op` with param leaf `p` and computed inputs `ins`.
pub fn enode(op: &Op, p: Id, ins: &[Id]) -> Nn {
    let u = || [p, ins[0]];
    match op {
        Op::Input { .. } => Nn::Input([p]),
        Op::Conv(_) => Nn::Conv(u()),
        Op::Dense { .. } => Nn::Dense(u()),
        Op::AddConst(_) => Nn::AddConst(u()),
        Op::MulConst(_) => Nn::MulConst(u()),
        Op::Add => Nn::Add([p, ins[0], ins[1]]),
        Op::Sub => Nn::Sub([p, ins[0], ins[1]]),
        Op::Mul => Nn::Mul([p, ins[0], ins[1]]),
        Op::Relu => Nn::Relu(u()),
        Op::LeakyRelu { .. } => Nn::LeakyRelu(u()),
        Op::PRelu(_) => Nn::PRelu(u()),
        Op::Sigmoid => Nn::Sigmoid(u()),
        Op::Tanh => Nn::Tanh(u()),
        Op::HardSigmoid { .. } => Nn::HardSigmoid(u()),
        Op::Clip { .. } => Nn::Clip(u()),
        Op::Square => Nn::Square(u()),
        Op::BatchNorm { .. } => Nn::BatchNorm(u()),
        Op::MaxPool(_) => Nn::MaxPool(u()),
        Op::AvgPool { .. } => Nn::AvgPool(u()),
        Op::GlobalAvgPool => Nn::GlobalAvgPool(u()),
        Op::SumPool(_) => Nn::SumPool(u()),
        Op::Poly(_) => Nn::Poly(u()),
        Op::FakeQuant(_) => Nn::FakeQuant(u()),
        Op::Pad { .. } => Nn::Pad(u()),
        Op::Reshape => Nn::Reshape(u()),
        Op::Transpose { .. } => Nn::Transpose(u()),
        Op::Softmax { .. } => Nn::Softmax(u()),
        Op::LogSoftmax { .. } => Nn::LogSoftmax(u()),
    }
}

/// An op with its weights, the name of the node it came from, and its output shape.
#[derive(Clone, Debug)]
pub struct Param {
    /// Node name (provenance; rules derive names like `conv1+bn`).
    pub name: String,
    /// The op.
    pub op: Op,
    /// Output shape.
    pub shape: Shape,
}

/// What the cost model needs to know about the values: widths and limits.
#[derive(Clone, Copy, Debug)]
pub struct CostParams {
    /// Bits of the encrypted input.
    pub input_bits: f64,
    /// Bits of quantized weights.
    pub weight_bits: f64,
    /// Bits of table outputs.
    pub act_bits: f64,
    /// Widest table; wider values are rounded (one bootstrap per removed bit) first.
    pub max_table_bits: f64,
    /// Float range of the graph input (from the pixel preprocessing).
    pub input_range: (f64, f64),
    /// Wide values are rounded approximately (no rounding bootstraps: a table, or a max
    /// pooling's comparison, reads their top bits).
    pub approximate: bool,
}

/// Per e-class facts.
#[derive(Clone, Debug)]
pub struct Data {
    /// Output shape (empty for params and output markers).
    pub shape: Shape,
    /// Interval hull of the float values.
    pub lo: f64,
    /// See `lo`.
    pub hi: f64,
    /// Estimated width of the integer holding the value after lowering.
    pub bits: f64,
}

/// The analysis: owns the params and the memo of applied rule matches.
pub struct NnAnalysis {
    /// Every op payload referenced by a `Param` leaf.
    pub params: Vec<Param>,
    /// Widths for the cost model and the input range for the intervals.
    pub cost: CostParams,
    memo: HashMap<(Symbol, Id, Vec<Id>), ()>,
}

/// The e-graph type of the NN IR.
pub type NnGraph = EGraph<Nn, NnAnalysis>;

/// A rewrite rule over the NN e-graph.
pub type Rule = Rewrite<Nn, NnAnalysis>;

impl NnAnalysis {
    /// An empty analysis.
    pub fn new(cost: CostParams) -> Self {
        NnAnalysis { params: vec![], cost, memo: HashMap::new() }
    }
}

/// The param of an op e-node (its first child), if `n` is an op.
pub fn param_of<'a>(eg: &'a NnGraph, n: &Nn) -> Option<&'a Param> {
    match n {
        Nn::Out(_) | Nn::Outputs(_) | Nn::Param(_) => None,
        _ => leaf(eg, n.children()[0]),
    }
}

/// The param held by the leaf class `id`.
pub fn leaf(eg: &NnGraph, id: Id) -> Option<&Param> {
    eg[id].nodes.iter().find_map(|n| match n {
        Nn::Param(p) => Some(&eg.analysis.params[p.0 as usize]),
        _ => None,
    })
}

fn hull(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0.min(b.0), a.1.max(b.1))
}

fn interval_of(op: &Op, shape: &[usize], ins: &[&Data], input: (f64, f64)) -> (f64, f64) {
    let x = ins.first().map_or(input, |d| (d.lo, d.hi));
    let mono = |f: &dyn Fn(f64) -> f64| (f(x.0), f(x.1));
    let lin = |w: &mut dyn Iterator<Item = f64>, b: f64, xr: (f64, f64)| {
        let (mut lo, mut hi) = (b, b);
        for w in w {
            lo += (w * xr.0).min(w * xr.1);
            hi += (w * xr.0).max(w * xr.1);
        }
        (lo, hi)
    };
    match op {
        Op::Input { .. } => input,
        Op::Conv(c) => {
            let xr = if c.pads.iter().any(|&p| p > 0) { hull(x, (0.0, 0.0)) } else { x };
            let mut r = (f64::INFINITY, f64::NEG_INFINITY);
            for oc in 0..c.weight.shape()[0] {
                let b = c.bias.as_ref().map_or(0.0, |b| b[oc] as f64);
                let plane = c.weight.index_axis(ndarray::Axis(0), oc);
                r = hull(r, lin(&mut plane.iter().map(|&w| w as f64), b, xr));
            }
            r
        }
        Op::Dense { weight, bias } => {
            let mut r = (f64::INFINITY, f64::NEG_INFINITY);
            for (o, row) in weight.outer_iter().enumerate() {
                let b = bias.as_ref().map_or(0.0, |b| b[o] as f64);
                r = hull(r, lin(&mut row.iter().map(|&w| w as f64), b, x));
            }
            r
        }
        Op::AddConst(c) => {
            let (a, b) = min_max(c.iter());
            (x.0 + a, x.1 + b)
        }
        Op::MulConst(c) | Op::PRelu(c) => {
            let (a, b) = min_max(c.iter());
            let ps = [a * x.0, a * x.1, b * x.0, b * x.1];
            let r = (
                ps.iter().copied().fold(f64::INFINITY, f64::min),
                ps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            if matches!(op, Op::PRelu(_)) { hull(r, (x.0.max(0.0), x.1.max(0.0))) } else { r }
        }
        Op::Add => (ins[0].lo + ins[1].lo, ins[0].hi + ins[1].hi),
        Op::Sub => (ins[0].lo - ins[1].hi, ins[0].hi - ins[1].lo),
        Op::Mul => {
            let ps = [ins[0].lo * ins[1].lo, ins[0].lo * ins[1].hi, ins[0].hi * ins[1].lo, ins[0].hi * ins[1].hi];
            (ps.iter().copied().fold(f64::INFINITY, f64::min), ps.iter().copied().fold(f64::NEG_INFINITY, f64::max))
        }
        Op::Relu => mono(&|v| v.max(0.0)),
        Op::LeakyRelu { alpha } => {
            let a = *alpha as f64;
            let f = |v: f64| if v >= 0.0 { v } else { a * v };
            let (p, q) = (f(x.0), f(x.1));
            (p.min(q), p.max(q))
        }
        Op::Sigmoid => mono(&|v| 1.0 / (1.0 + (-v).exp())),
        Op::Tanh => mono(&|v| v.tanh()),
        Op::HardSigmoid { alpha, beta } => {
            let f = |v: f64| (*alpha as f64 * v + *beta as f64).clamp(0.0, 1.0);
            let (p, q) = (f(x.0), f(x.1));
            (p.min(q), p.max(q))
        }
        Op::Clip { min, max } => {
            let f = |v: f64| {
                v.max(min.map_or(f64::NEG_INFINITY, |m| m as f64)).min(max.map_or(f64::INFINITY, |m| m as f64))
            };
            mono(&f)
        }
        Op::Square => {
            let (a, b) = (x.0 * x.0, x.1 * x.1);
            (if x.0 <= 0.0 && x.1 >= 0.0 { 0.0 } else { a.min(b) }, a.max(b))
        }
        Op::Poly(c) => {
            // Sampled: an estimate for the cost model, not a bound.
            let mut r = (f64::INFINITY, f64::NEG_INFINITY);
            for i in 0..=64 {
                let v = x.0 + (x.1 - x.0) * i as f64 / 64.0;
                let y = c.iter().rev().fold(0.0, |a, &k| a * v + k as f64);
                r = hull(r, (y, y));
            }
            r
        }
        Op::BatchNorm { scale, bias, mean, var, epsilon } => {
            let mut r = (f64::INFINITY, f64::NEG_INFINITY);
            for ch in 0..scale.len() {
                let k = scale[ch] as f64 / ((var[ch] + epsilon) as f64).sqrt();
                let t = bias[ch] as f64 - mean[ch] as f64 * k;
                let (p, q) = (k * x.0 + t, k * x.1 + t);
                r = hull(r, (p.min(q), p.max(q)));
            }
            r
        }
        Op::MaxPool(_) | Op::Reshape | Op::Transpose { .. } => x,
        Op::AvgPool { pool, count_include_pad } => {
            if *count_include_pad && pool.pads.iter().any(|&p| p > 0) {
                hull(x, (0.0, 0.0))
            } else {
                x
            }
        }
        Op::GlobalAvgPool => x,
        Op::SumPool(p) => {
            let k = (p.kernel[0] * p.kernel[1]) as f64;
            (k * x.0.min(0.0), k * x.1.max(0.0))
        }
        Op::FakeQuant(g) => {
            let (a, b) = (g.dequantize(g.qmin) as f64, g.dequantize(g.qmax) as f64);
            (x.0.clamp(a, b), x.1.clamp(a, b))
        }
        Op::Pad { value, .. } => hull(x, (*value as f64, *value as f64)),
        Op::Softmax { .. } => (0.0, 1.0),
        Op::LogSoftmax { .. } => {
            let n = shape.iter().product::<usize>().max(1) as f64;
            ((x.0 - x.1 - n.ln()).min(0.0), 0.0)
        }
    }
}

fn min_max<'a>(it: impl Iterator<Item = &'a f32>) -> (f64, f64) {
    it.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v as f64), b.max(v as f64)))
}

/// Whether an op is an element-wise non-linear function (one table per element after
/// lowering, fused with its neighbours).
pub fn is_table_op(op: &Op) -> bool {
    match op {
        Op::Poly(c) => c.len() > 2,
        _ => matches!(
            op,
            Op::Relu
                | Op::LeakyRelu { .. }
                | Op::PRelu(_)
                | Op::Sigmoid
                | Op::Tanh
                | Op::HardSigmoid { .. }
                | Op::Clip { .. }
                | Op::Square
                | Op::FakeQuant(_)
                | Op::Mul
                | Op::Softmax { .. }
                | Op::LogSoftmax { .. }
        ),
    }
}

/// Fan-in of one output of a linear op.
pub fn fan_in(op: &Op) -> usize {
    match op {
        Op::Conv(c) => c.weight.shape()[1..].iter().product(),
        Op::Dense { weight, .. } => weight.ncols(),
        _ => 1,
    }
}

fn bits_of(op: &Op, ins: &[&Data], c: &CostParams) -> f64 {
    let x = ins.first().map_or(c.input_bits, |d| d.bits);
    match op {
        Op::Input { .. } => c.input_bits,
        Op::Conv(_) | Op::Dense { .. } => x + (c.weight_bits - 1.0) + 0.5 * (fan_in(op) as f64).log2(),
        Op::Add | Op::Sub => ins[0].bits.max(ins[1].bits) + 1.0,
        Op::SumPool(p) | Op::AvgPool { pool: p, .. } => x + ((p.kernel[0] * p.kernel[1]) as f64).log2(),
        Op::FakeQuant(g) => ((g.qmax - g.qmin + 1) as f64).log2().min(c.act_bits.max(1.0)),
        op if is_table_op(op) => c.act_bits,
        _ => x,
    }
}

impl Analysis<Nn> for NnAnalysis {
    type Data = Data;

    fn make(eg: &mut NnGraph, n: &Nn, _id: Id) -> Data {
        let Some(p) = param_of(eg, n) else {
            let bits = match n {
                Nn::Out(x) => eg[*x].data.bits,
                _ => 0.0,
            };
            return Data { shape: vec![], lo: 0.0, hi: 0.0, bits };
        };
        let ins: Vec<&Data> = n.children()[1..].iter().map(|&c| &eg[c].data).collect();
        let (lo, hi) = interval_of(&p.op, &p.shape, &ins, eg.analysis.cost.input_range);
        let bits = bits_of(&p.op, &ins, &eg.analysis.cost);
        Data { shape: p.shape.clone(), lo, hi, bits }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let (lo, hi, bits) = (a.lo.max(b.lo), a.hi.min(b.hi), a.bits.min(b.bits));
        // Both are sound over-approximations (up to float rounding): keep the tighter,
        // unless rounding made them disjoint.
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (a.lo, a.hi) };
        let changed = lo != a.lo || hi != a.hi || bits != a.bits;
        let b_changed = lo != b.lo || hi != b.hi || bits != b.bits;
        *a = Data { shape: std::mem::take(&mut a.shape), lo, hi, bits };
        DidMerge(changed, b_changed)
    }
}

/// Adds `op` on `ins` as a new param and e-node; the shape is inferred (or `declared`,
/// for reshapes). `None` if the shapes do not fit.
pub fn add_op(eg: &mut NnGraph, name: String, op: Op, ins: &[Id], declared: Option<Shape>) -> Option<Id> {
    let in_shapes: Vec<Shape> = ins.iter().map(|&i| eg[i].data.shape.clone()).collect();
    let refs: Vec<&[usize]> = in_shapes.iter().map(|s| s.as_slice()).collect();
    let shape = op.infer_shape(&refs, declared.as_deref().unwrap_or(&[])).ok()?;
    let n = enode(&op, Id::from(0usize), ins);
    // Reuse an equal param, so that a rule re-deriving the same op adds no new e-node.
    let same = eg.analysis.params.iter().position(|q| q.name == name && q.shape == shape && q.op == op);
    let pid = match same {
        Some(i) => ParamId(i as u32),
        None => {
            eg.analysis.params.push(Param { name, op, shape });
            ParamId(eg.analysis.params.len() as u32 - 1)
        }
    };
    let p = eg.add(Nn::Param(pid));
    let mut n = n;
    n.children_mut()[0] = p;
    Some(eg.add(n))
}

/// The op, name and shape behind the param variable `v` of a match.
pub fn param(eg: &NnGraph, s: &Subst, v: &str) -> Param {
    let var: Var = v.parse().expect("variable");
    leaf(eg, s[var]).expect("a param variable binds a param leaf").clone()
}

/// The e-class bound to variable `v`.
pub fn class(s: &Subst, v: &str) -> Id {
    s[v.parse::<Var>().expect("variable")]
}

type ApplyFn = dyn Fn(&mut NnGraph, &Subst) -> Option<Id> + Send + Sync;

struct FnApplier {
    f: Box<ApplyFn>,
    vars: Vec<Var>,
}

impl egg::Applier<Nn, NnAnalysis> for FnApplier {
    fn apply_one(
        &self,
        eg: &mut NnGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&egg::PatternAst<Nn>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key = (rule, eg.find(eclass), self.vars.iter().map(|v| eg.find(subst[*v])).collect());
        if eg.analysis.memo.insert(key, ()).is_some() {
            return vec![];
        }
        match (self.f)(eg, subst) {
            Some(new) if eg.union(eclass, new) => vec![eclass],
            _ => vec![],
        }
    }
}

/// A rule: `pattern` (egg syntax) rewritten by `f`, which returns the class of the
/// equivalent expression it built, or `None` when the rule's condition does not hold.
pub fn rule(name: &str, pattern: &str, f: impl Fn(&mut NnGraph, &Subst) -> Option<Id> + Send + Sync + 'static) -> Rule {
    let pat: Pattern<Nn> = pattern.parse().unwrap_or_else(|e| panic!("rule {name}: bad pattern {pattern}: {e}"));
    let vars = <Pattern<Nn> as egg::Searcher<Nn, NnAnalysis>>::vars(&pat);
    Rewrite::new(name, pat, FnApplier { f: Box::new(f), vars }).unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// Runner limits of one rewriting run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Iterations.
    pub iters: usize,
    /// E-nodes.
    pub nodes: usize,
    /// Wall time.
    pub time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { iters: 30, nodes: 20_000, time: std::time::Duration::from_secs(20) }
    }
}

/// What a rewriting run did.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// Rules that fired (applications that changed the e-graph), by name, in order.
    pub applied: Vec<(String, usize)>,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub nodes: usize,
    /// Why the runner stopped.
    pub stop: String,
    /// Extracted cost before and after.
    pub cost: (f64, f64),
}

/// Saturates `g` with `rules` and extracts the cheapest equivalent graph under the cost
/// model ([`cost::BootstrapCost`]).
pub fn rewrite(g: &Graph, rules: &[Rule], cost: CostParams, limits: Limits) -> Result<(Graph, RunStats), PassFailure> {
    let mut eg = NnGraph::new(NnAnalysis::new(cost));
    let order = g.topo_order().ok_or(PassFailure::Cycle)?;
    let mut ids: HashMap<NodeId, Id> = HashMap::new();
    for id in order {
        let node = g.node(id);
        let ins: Vec<Id> = g.inputs_of(id).iter().map(|i| ids[i]).collect();
        let pid = ParamId(eg.analysis.params.len() as u32);
        eg.analysis.params.push(Param { name: node.name.clone(), op: node.op.clone(), shape: node.shape.clone() });
        let p = eg.add(Nn::Param(pid));
        ids.insert(id, eg.add(enode(&node.op, p, &ins)));
    }
    let outs: Vec<Id> = g.outputs().iter().map(|o| eg.add(Nn::Out(ids[o]))).collect();
    let root = eg.add(Nn::Outputs(outs.into_boxed_slice()));
    eg.rebuild();
    let before = Extractor::new(&eg, cost::BootstrapCost::new(&eg)).find_best_cost(root);
    let runner: Runner<Nn, NnAnalysis, ()> = Runner::new(NnAnalysis::new(cost))
        .with_egraph(eg)
        .with_iter_limit(limits.iters)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(rules);
    let mut applied: Vec<(String, usize)> = vec![];
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            match applied.iter_mut().find(|(a, _)| a == name.as_str()) {
                Some(e) => e.1 += n,
                None => applied.push((name.to_string(), *n)),
            }
        }
    }
    let eg = &runner.egraph;
    let root = eg.find(root);
    let (after, best) = Extractor::new(eg, cost::BootstrapCost::new(eg)).find_best(root);
    // Nothing fired: the graph itself (the round trip could renumber independent branches).
    let out = if applied.is_empty() {
        g.clone()
    } else {
        let mut out = from_expr(&best, eg, g)?;
        out.metadata = g.metadata.clone();
        out
    };
    let stats = RunStats {
        applied,
        iterations: runner.iterations.len(),
        nodes: eg.total_number_of_nodes(),
        stop: format!("{:?}", runner.stop_reason),
        cost: (before, after),
    };
    Ok((out, stats))
}

/// Rebuilds a graph from an extracted expression.
fn from_expr(e: &RecExpr<Nn>, eg: &NnGraph, orig: &Graph) -> Result<Graph, PassFailure> {
    let nodes = e.as_ref();
    let prm = |n: &Nn| -> Result<&Param, PassFailure> {
        match &nodes[usize::from(n.children()[0])] {
            Nn::Param(p) => Ok(&eg.analysis.params[p.0 as usize]),
            other => Err(PassFailure::NoParam { op: n.to_string(), found: other.to_string() }),
        }
    };
    let mut g = Graph::new(orig.name.clone());
    let mut map: HashMap<usize, NodeId> = HashMap::new();
    // Inputs first, in their original order.
    let mut inputs: Vec<(usize, usize)> = vec![];
    for (i, n) in nodes.iter().enumerate() {
        if let Nn::Input(_) = n
            && let Op::Input { index } = prm(n)?.op
        {
            inputs.push((index, i));
        }
    }
    inputs.sort();
    for (pos, &(index, i)) in inputs.iter().enumerate() {
        if pos != index {
            return Err(PassFailure::InputRemoved(index));
        }
        let p = prm(&nodes[i])?;
        map.insert(i, g.add_input(p.name.clone(), p.shape.clone()));
    }
    for (i, n) in nodes.iter().enumerate() {
        match n {
            Nn::Param(_) | Nn::Input(_) => {}
            Nn::Out(_) => {}
            Nn::Outputs(cs) => {
                for c in cs.iter() {
                    if let Nn::Out(x) = &nodes[usize::from(*c)] {
                        g.add_output(map[&usize::from(*x)]);
                    }
                }
            }
            _ => {
                let p = prm(n)?;
                let ins: Vec<NodeId> = n.children()[1..].iter().map(|c| map[&usize::from(*c)]).collect();
                let id = g
                    .add_op_with_shape(p.name.clone(), p.op.clone(), &ins, &p.shape)
                    .map_err(|e| PassFailure::Rebuild { node: p.name.clone(), message: e.to_string() })?;
                map.insert(i, id);
            }
        }
    }
    Ok(g)
}
