//! Optimisation passes over the NN IR and the driver that runs them.
//!
//! A [`Pass`] takes a verified graph and returns an equivalent one (float semantics within
//! 1e-4, or the same argmax for `argmax-tail`, or the documented approximation for
//! `activations`). The [`Pipeline`] runs passes in order, verifies the graph after every
//! pass, names the pass in every error, and hands each intermediate graph to a callback
//! (`fhec build --print-ir-after-all`).
//!
//! Passes (one file each, with its contract):
//! * e-graph rule groups ([`egraph`], egg): `canonical-activations`, `fold-affine`,
//!   `merge-linear`, `sum-pooling`, `max-pool-order`, `fuse-requant`, `argmax-tail`; each alone, or all
//!   together in one e-graph as `declutter` (the default), extracted with the cost model
//!   of [`egraph::cost`];
//! * `activations`: polynomial substitution of activations ([`activations`]).
//!
//! Default pipeline: `activations,declutter`.

pub mod activations;
pub mod argmax_tail;
pub mod canonical;
pub mod egraph;
pub mod fold_affine;
pub mod fuse_requant;
pub mod max_pool_order;
pub mod merge_linear;
pub mod pooling;

use fhec_ir::nn::{Graph, Tensor, verify::verify};

pub use activations::ActivationPolicy;
use egraph::{CostParams, Limits, Rule};

/// What every pass may read: calibration inputs, widths, policies, limits.
#[derive(Clone, Debug)]
pub struct PassContext {
    /// Float inputs of the model (preprocessed calibration images).
    pub calibration: Vec<Tensor>,
    /// Widths and input range for the e-graph cost model.
    pub cost: CostParams,
    /// Activation policy of the `activations` pass.
    pub activations: ActivationPolicy,
    /// Degree of the fitted polynomials (`--activations poly`).
    pub poly_degree: usize,
    /// Runner limits of the e-graph passes.
    pub limits: Limits,
}

/// What a pass did, in lines for humans (rules fired, activations replaced, costs).
pub type PassNotes = Vec<String>;

/// One optimisation pass.
pub trait Pass {
    /// Kebab-case name (`--passes`).
    fn name(&self) -> &'static str;
    /// Runs on a verified graph; returns the new graph and notes.
    fn run(&self, g: &Graph, cx: &PassContext) -> Result<(Graph, PassNotes), String>;
}

/// A pass failed, or left an invalid graph.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// Unknown pass name.
    #[error("unknown pass '{name}' (passes: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// The pass reported an error.
    #[error("pass '{pass}': {message}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong.
        message: String,
    },
    /// The graph after the pass does not verify (a compiler bug).
    #[error("pass '{pass}' produced an invalid graph: {message}")]
    Invalid {
        /// The pass.
        pass: String,
        /// The verifier's message.
        message: String,
    },
}

/// An e-graph pass: one or more rule groups, saturated together, then extracted.
pub struct RewritePass {
    name: &'static str,
    rules: fn() -> Vec<Rule>,
}

impl Pass for RewritePass {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&self, g: &Graph, cx: &PassContext) -> Result<(Graph, PassNotes), String> {
        let (out, st) = egraph::rewrite(g, &(self.rules)(), cx.cost, cx.limits)?;
        let fired: Vec<String> = st.applied.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        let notes = vec![
            format!("rules fired: {}", if fired.is_empty() { "none".to_string() } else { fired.join(", ") }),
            format!(
                "e-graph: {} iteration(s), {} e-nodes, stopped: {}; estimated cost {:.1} -> {:.1}",
                st.iterations, st.nodes, st.stop, st.cost.0, st.cost.1
            ),
        ];
        Ok((out, notes))
    }
}

fn declutter_rules() -> Vec<Rule> {
    let mut r = canonical::rules();
    r.extend(fuse_requant::rules());
    r.extend(fold_affine::rules());
    r.extend(merge_linear::rules());
    r.extend(pooling::rules());
    r.extend(max_pool_order::rules());
    r.extend(argmax_tail::rules());
    r
}

/// Every pass name, in the order `--help` lists them.
pub const PASS_NAMES: &[&str] = &[
    "declutter",
    "canonical-activations",
    "fuse-requant",
    "fold-affine",
    "merge-linear",
    "sum-pooling",
    "max-pool-order",
    "argmax-tail",
    "activations",
];

/// The default pipeline.
pub const DEFAULT_PIPELINE: &[&str] = &["activations", "declutter"];

/// The pass called `name`.
pub fn by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    let rw = |name: &'static str, rules: fn() -> Vec<Rule>| -> Box<dyn Pass> { Box::new(RewritePass { name, rules }) };
    Ok(match name {
        "declutter" => rw("declutter", declutter_rules),
        "canonical-activations" => rw("canonical-activations", canonical::rules),
        "fuse-requant" => rw("fuse-requant", fuse_requant::rules),
        "fold-affine" => rw("fold-affine", fold_affine::rules),
        "merge-linear" => rw("merge-linear", merge_linear::rules),
        "sum-pooling" => rw("sum-pooling", pooling::rules),
        "max-pool-order" => rw("max-pool-order", max_pool_order::rules),
        "argmax-tail" => rw("argmax-tail", argmax_tail::rules),
        "activations" => Box::new(activations::Activations),
        _ => return Err(PassError::Unknown { name: name.into(), known: PASS_NAMES.join(", ") }),
    })
}

/// An ordered list of passes.
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// The passes named in `names` (empty: no pass).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<Pipeline, PassError> {
        Ok(Pipeline { passes: names.iter().map(|n| by_name(n.as_ref())).collect::<Result<_, _>>()? })
    }

    /// Parses `a,b,c`; `none` or an empty string is the empty pipeline.
    pub fn parse(spec: &str) -> Result<Pipeline, PassError> {
        let names: Vec<&str> = spec.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "none").collect();
        Pipeline::new(&names)
    }

    /// The default pipeline.
    pub fn default_pipeline() -> Pipeline {
        Pipeline::new(DEFAULT_PIPELINE).expect("default passes exist")
    }

    /// Pass names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass on `g` in order; `after(pass, graph, notes)` sees the graph after
    /// each pass (already verified).
    pub fn run(
        &self,
        g: &Graph,
        cx: &PassContext,
        after: &mut dyn FnMut(&str, &Graph, &[String]),
    ) -> Result<Graph, PassError> {
        verify(g).map_err(|e| PassError::Invalid { pass: "(input)".into(), message: e.0 })?;
        let mut cur = g.clone();
        for p in &self.passes {
            let (next, notes) =
                p.run(&cur, cx).map_err(|message| PassError::Failed { pass: p.name().into(), message })?;
            verify(&next).map_err(|e| PassError::Invalid { pass: p.name().into(), message: e.0 })?;
            after(p.name(), &next, &notes);
            cur = next;
        }
        Ok(cur)
    }
}
