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
//! Pass identity (CLI name, file, fixtures and snapshot, the pass itself) is one table,
//! [`PassKind`].
//!
//! Default pipeline: `activations,declutter`.

pub mod activations;
pub mod argmax_tail;
pub mod canonical_activations;
pub mod egraph;
pub mod fold_affine;
pub mod fuse_requant;
pub mod max_pool_order;
pub mod merge_linear;
pub mod sum_pooling;

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
    fn run(&self, g: &Graph, cx: &PassContext) -> Result<(Graph, PassNotes), PassFailure>;
}

/// Why a pass could not run (inside [`PassError::Failed`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassFailure {
    /// The input graph has a cycle.
    #[error("the graph has a cycle")]
    Cycle,
    /// The `activations` pass was given no calibration inputs.
    #[error("needs calibration inputs to fit activations on their ranges")]
    NoCalibration,
    /// The float interpreter failed on a calibration input.
    #[error("calibration: {0}")]
    Calibration(String),
    /// An extracted e-node has no param leaf (an e-graph bug).
    #[error("extracted op {op} has no param leaf (found {found})")]
    NoParam {
        /// The e-node.
        op: String,
        /// What its first child is.
        found: String,
    },
    /// Rewriting removed a graph input.
    #[error("graph input {0} was removed by rewriting")]
    InputRemoved(usize),
    /// Rebuilding a node of the extracted graph failed.
    #[error("node '{node}': {message}")]
    Rebuild {
        /// The node.
        node: String,
        /// The graph builder's message.
        message: String,
    },
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
    #[error("pass '{pass}': {error}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong.
        #[source]
        error: PassFailure,
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
    kind: PassKind,
}

impl Pass for RewritePass {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn run(&self, g: &Graph, cx: &PassContext) -> Result<(Graph, PassNotes), PassFailure> {
        let (out, st) = egraph::rewrite(g, &self.kind.rules().unwrap_or_default(), cx.cost, cx.limits)?;
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

/// Every pass, one variant each: the single table of pass identity. Each variant gives its
/// CLI name ([`PassKind::name`], what `--passes` takes), its file under
/// `compiler/src/passes/` ([`PassKind::file`], the name with `_` for `-`), the name of its
/// fixture group and snapshot in `tests/passes.rs` ([`PassKind::snapshot`]), and the pass
/// itself ([`PassKind::pass`]: a [`RewritePass`] over its rule group, or the
/// [`activations::Activations`] struct).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PassKind {
    /// Every rule group in one e-graph (`declutter.rs` has no rules of its own: it is this table's union).
    Declutter,
    /// [`canonical_activations`].
    CanonicalActivations,
    /// [`fuse_requant`].
    FuseRequant,
    /// [`fold_affine`].
    FoldAffine,
    /// [`merge_linear`].
    MergeLinear,
    /// [`sum_pooling`].
    SumPooling,
    /// [`max_pool_order`].
    MaxPoolOrder,
    /// [`argmax_tail`].
    ArgmaxTail,
    /// [`activations`] (not an e-graph pass).
    Activations,
}

impl PassKind {
    /// Every pass, in the order `--help` lists them.
    pub const ALL: [PassKind; 9] = [
        PassKind::Declutter,
        PassKind::CanonicalActivations,
        PassKind::FuseRequant,
        PassKind::FoldAffine,
        PassKind::MergeLinear,
        PassKind::SumPooling,
        PassKind::MaxPoolOrder,
        PassKind::ArgmaxTail,
        PassKind::Activations,
    ];

    /// The kebab-case name (`--passes`, `Pass::name`, error messages).
    pub const fn name(self) -> &'static str {
        match self {
            PassKind::Declutter => "declutter",
            PassKind::CanonicalActivations => "canonical-activations",
            PassKind::FuseRequant => "fuse-requant",
            PassKind::FoldAffine => "fold-affine",
            PassKind::MergeLinear => "merge-linear",
            PassKind::SumPooling => "sum-pooling",
            PassKind::MaxPoolOrder => "max-pool-order",
            PassKind::ArgmaxTail => "argmax-tail",
            PassKind::Activations => "activations",
        }
    }

    /// The pass's source file under `compiler/src/passes/` (`None` for `declutter`, which
    /// is the union of the rule groups, defined here).
    pub fn file(self) -> Option<String> {
        (self != PassKind::Declutter).then(|| format!("{}.rs", self.name().replace('-', "_")))
    }

    /// The name of the pass's snapshot in `tests/passes.rs` (`pass_{name}`), whose fixtures
    /// are the rule group's (all of them for `declutter`).
    pub fn snapshot(self) -> String {
        format!("pass_{}", self.name())
    }

    /// The pass called `name`.
    pub fn from_name(name: &str) -> Option<PassKind> {
        PassKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The rules of an e-graph pass (`None` for `activations`).
    pub fn rules(self) -> Option<Vec<Rule>> {
        Some(match self {
            PassKind::Declutter => {
                PassKind::ALL.into_iter().filter(|k| k.is_rule_group()).flat_map(|k| k.rules()).flatten().collect()
            }
            PassKind::CanonicalActivations => canonical_activations::rules(),
            PassKind::FuseRequant => fuse_requant::rules(),
            PassKind::FoldAffine => fold_affine::rules(),
            PassKind::MergeLinear => merge_linear::rules(),
            PassKind::SumPooling => sum_pooling::rules(),
            PassKind::MaxPoolOrder => max_pool_order::rules(),
            PassKind::ArgmaxTail => argmax_tail::rules(),
            PassKind::Activations => return None,
        })
    }

    /// Whether this is one e-graph rule group (every pass but `declutter`, which runs them
    /// all, and `activations`).
    pub fn is_rule_group(self) -> bool {
        !matches!(self, PassKind::Declutter | PassKind::Activations)
    }

    /// The pass.
    pub fn pass(self) -> Box<dyn Pass> {
        match self {
            PassKind::Activations => Box::new(activations::Activations),
            k => Box::new(RewritePass { kind: k }),
        }
    }
}

/// Every pass name, in the order `--help` lists them ([`PassKind::ALL`]).
pub const PASS_NAMES: &[&str] = &{
    let mut names = [""; PassKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = PassKind::ALL[i].name();
        i += 1;
    }
    names
};

/// The default pipeline.
pub const DEFAULT_PIPELINE: &[&str] = &[PassKind::Activations.name(), PassKind::Declutter.name()];

/// The pass called `name`.
pub fn by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    PassKind::from_name(name)
        .map(PassKind::pass)
        .ok_or_else(|| PassError::Unknown { name: name.into(), known: PASS_NAMES.join(", ") })
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
            let (next, notes) = p.run(&cur, cx).map_err(|error| PassError::Failed { pass: p.name().into(), error })?;
            verify(&next).map_err(|e| PassError::Invalid { pass: p.name().into(), message: e.0 })?;
            after(p.name(), &next, &notes);
            cur = next;
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pass_has_its_file_and_its_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/passes");
        for k in PassKind::ALL {
            assert_eq!(PassKind::from_name(k.name()), Some(k));
            assert_eq!(by_name(k.name()).unwrap().name(), k.name());
            if let Some(f) = k.file() {
                assert!(dir.join(&f).is_file(), "{k:?}: no {f}");
            }
        }
        assert_eq!(PASS_NAMES.len(), PassKind::ALL.len());
    }
}
