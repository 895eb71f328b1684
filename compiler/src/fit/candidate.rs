//! A compiled candidate of the search and the knobs that change one.

use super::*;

/// One compiled candidate.
#[derive(Clone)]
pub(super) struct Eval {
    pub(super) circuit: Circuit,
    pub(super) setup: Result<FheSetup, ParamError>,
    pub(super) accuracy: Option<f64>,
    /// [`GUARD_SE`] standard errors of the accuracy loss measured on the validation
    /// images (a fraction), subtracted before comparing with the budget.
    pub(super) guard: f64,
    /// Validation images (of the first read-noise draw) that drive a value outside the
    /// calibrated ranges, if simulated: their encrypted result is unspecified.
    pub(super) outside: Option<usize>,
}

/// Validation images of the quick first look at a grid candidate ([`Search::quick_reject`]).
pub(super) const QUICK_IMAGES: usize = 250;

/// How far below the target a quick look must land to reject a candidate (4 points: far
/// beyond the noise of 250 images).
pub(super) const QUICK_MARGIN: f64 = 0.04;

impl Eval {
    pub(super) fn cost(&self) -> Option<f64> {
        self.setup.as_ref().ok().map(|s| s.est_cost_ms)
    }
}

/// The layers the widths are chosen for.
#[derive(Clone, Debug)]
pub(super) struct Layers {
    /// Linear nodes (weights).
    pub(super) linear: Vec<String>,
    /// Tables, by the name of the node whose chain they apply.
    pub(super) tables: Vec<String>,
    /// Whether some max pooling reads table outputs (their width then costs).
    pub(super) pool_reads_tables: bool,
}

pub(super) fn layers_of(c: &Circuit) -> Layers {
    let mut linear = vec![];
    let mut tables = vec![];
    for n in &c.nodes {
        match &n.op {
            COp::Conv { .. } | COp::Dense { .. } => linear.push(n.name.clone()),
            COp::Table { .. } => {
                if let Some(base) = n.name.strip_suffix(".table")
                    && !tables.iter().any(|t| t == base)
                {
                    tables.push(base.to_string());
                }
            }
            _ => {}
        }
    }
    let pool_reads_tables = c.nodes.iter().any(|n| {
        matches!(n.op, COp::MaxPool { .. })
            && n.inputs.first().is_some_and(|&i| matches!(c.nodes[i].op, COp::Table { .. }))
    });
    Layers { linear, tables, pool_reads_tables }
}

pub(super) fn key(q: &QuantOptions) -> String {
    serde_json::to_string(q).unwrap_or_default()
}

pub(super) fn with_layer(q: &QuantOptions, name: &str, f: impl FnOnce(&mut LayerWidths)) -> QuantOptions {
    let mut q = q.clone();
    f(q.layers.entry(name.to_string()).or_default());
    q
}

/// The knobs of one layer the fill and descend steps move, with their bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Knob {
    Weight,
    Table,
    Act,
}

pub(super) const WEIGHT_BITS: (u32, u32) = (3, 8);
pub(super) const TABLE_BITS: (u32, u32) = (3, 9);
pub(super) const ACT_BITS: (u32, u32) = (2, 8);

pub(super) fn get(q: &QuantOptions, name: &str, k: Knob) -> u32 {
    match k {
        Knob::Weight => q.weight_bits_of(name),
        Knob::Table => q.table_bits_of(name),
        Knob::Act => q.act_bits_of(name),
    }
}

pub(super) fn set(q: &QuantOptions, name: &str, k: Knob, v: u32) -> Option<QuantOptions> {
    let (lo, hi) = match k {
        Knob::Weight => WEIGHT_BITS,
        Knob::Table => TABLE_BITS,
        Knob::Act => ACT_BITS,
    };
    if !(lo..=hi).contains(&v) {
        return None;
    }
    Some(with_layer(q, name, |l| match k {
        Knob::Weight => l.weight_bits = Some(v),
        Knob::Table => l.table_bits = Some(v),
        Knob::Act => l.act_bits = Some(v),
    }))
}
