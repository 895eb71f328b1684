//! The build report: what a circuit costs, as data (for `--json`) and as text.

use std::collections::BTreeMap;
use std::fmt::Write;

use fhec_ir::circuit::{COp, Circuit, Rounding};
use serde::Serialize;

/// One node that bootstraps or accumulates.
#[derive(Debug, Serialize)]
pub struct LayerStat {
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Exact value range.
    pub range: [i64; 2],
    /// Bits of the range.
    pub width: u32,
    /// Noise 2-norm of the linear chain ending here.
    pub norm2: f64,
    /// Table bootstraps of this node.
    pub tables: usize,
    /// Width those tables read.
    pub table_width: Option<u32>,
    /// Exact-rounding bootstraps of this node.
    pub rounding: usize,
}

/// The report of `fhec build`.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    /// Circuit name.
    pub name: String,
    /// Build options.
    pub options: BTreeMap<String, String>,
    /// Node count per op.
    pub op_counts: BTreeMap<&'static str, usize>,
    /// Table bootstraps per inference by the width they read.
    pub tables_by_width: BTreeMap<u32, usize>,
    /// Total table bootstraps.
    pub table_bootstraps: usize,
    /// Exact-rounding bootstraps (sign reads and chunk tables).
    pub rounding_bootstraps: usize,
    /// Values rounded approximately (no bootstraps; their tables read the top bits).
    pub approx_rounded_values: usize,
    /// Widest chunk of bits one rounding step removes (`Circuit::round_chunks`).
    pub round_chunk: u32,
    /// All bootstraps per inference.
    pub total_bootstraps: usize,
    /// Widest table read.
    pub max_table_width: u32,
    /// Largest noise 2-norm feeding a bootstrap.
    pub max_norm2: f64,
    /// Input bits.
    pub input_bits: u32,
    /// Widest value of the circuit (the output accumulator typically).
    pub max_value_width: u32,
    /// Per-node statistics (linear ops and bootstrapping ops).
    pub layers: Vec<LayerStat>,
    /// Encrypted execution: parameters and costs, if 128-bit parameters exist.
    pub fhe: Option<FheReport>,
}

/// The TFHE side of the report.
#[derive(Debug, Serialize)]
pub struct FheReport {
    /// The parameters.
    pub params: fhec_ir::params::TfheParams,
    /// Estimated security of the weaker key (bits).
    pub security_bits: f64,
    /// Largest failure probability of one bootstrap.
    pub p_error: f64,
    /// Bound on the failure probability of one inference.
    pub global_p_error: f64,
    /// The evaluation key as it travels: seeded form, framed, exactly as
    /// `Client::evaluation_key` produces it (`fhec_ir::wire::evaluation_key_bytes`).
    pub evaluation_key_bytes: usize,
    /// Bootstrap key bytes in server memory (Fourier domain, after decompression).
    pub bootstrap_key_bytes: usize,
    /// Keyswitch key bytes in server memory (after decompression).
    pub keyswitch_key_bytes: usize,
    /// Upload per image: the encrypted image in seeded form, framed, exactly as
    /// `Client::encrypt` produces it (`fhec_ir::wire::encrypted_image_bytes`).
    pub upload_bytes: usize,
    /// Download per image: the encrypted result in compact form, framed, exactly as
    /// `Server::classify` returns it (`fhec_ir::wire::encrypted_result_bytes`).
    pub download_bytes: usize,
    /// Estimated server time per image on one core (ms).
    pub est_latency_ms_one_core: f64,
    /// Expected fraction of approximately rounded reads that land one step off (the largest
    /// over the circuit's roundings; 0 without approximate rounding).
    pub approx_step_rate: f64,
}

/// Builds the report of a circuit.
pub fn build_report(
    c: &Circuit,
    options: &BTreeMap<String, String>,
    fhe: Option<&fhec_ir::params::FheSetup>,
) -> BuildReport {
    let stats = c.bootstrap_stats();
    let mut op_counts = BTreeMap::new();
    let mut layers = vec![];
    for (id, n) in c.nodes.iter().enumerate() {
        *op_counts.entry(n.op.name()).or_default() += 1;
        if matches!(n.op, COp::Reshape | COp::Transpose { .. }) {
            continue;
        }
        let (t, r) = c.node_bootstraps(id);
        layers.push(LayerStat {
            name: n.name.clone(),
            op: n.op.name(),
            shape: n.shape.clone(),
            range: [n.range.min, n.range.max],
            width: n.range.width(),
            norm2: if t.is_some() || r > 0 { c.table_input_norm2(id) } else { n.norm2 },
            tables: t.map_or(0, |(_, k)| k),
            table_width: t.map(|(w, _)| w),
            rounding: r,
        });
    }
    let input_bits = match c.nodes[0].op {
        COp::Input { bits } => bits,
        _ => 0,
    };
    BuildReport {
        name: c.name.clone(),
        options: options.clone(),
        op_counts,
        table_bootstraps: stats.by_width.values().sum(),
        tables_by_width: stats.by_width.clone(),
        rounding_bootstraps: stats.rounding,
        approx_rounded_values: c
            .nodes
            .iter()
            .filter(|n| matches!(n.op, COp::Round { mode: Rounding::Approximate, .. }))
            .map(|n| n.shape.iter().product::<usize>())
            .sum(),
        round_chunk: c.round_chunk,
        total_bootstraps: stats.total(),
        max_table_width: stats.max_width(),
        max_norm2: stats.max_norm2,
        input_bits,
        max_value_width: c.nodes.iter().map(|n| n.range.width()).max().unwrap_or(0),
        layers,
        fhe: fhe.map(|f| {
            let (bsk, ksk) = f.params.key_bytes();
            FheReport {
                params: f.params,
                security_bits: f.security_bits,
                p_error: f.p_error,
                global_p_error: f.global_p_error,
                evaluation_key_bytes: fhec_ir::wire::evaluation_key_bytes(&f.params),
                bootstrap_key_bytes: bsk,
                keyswitch_key_bytes: ksk,
                upload_bytes: fhec_ir::wire::encrypted_image_bytes(c.input_shape()),
                download_bytes: fhec_ir::wire::encrypted_result_bytes(
                    &c.nodes[c.output].shape,
                    &f.params,
                    fhec_ir::params::result_form(&f.params, &f.plan, c),
                ),
                est_latency_ms_one_core: f.est_cost_ms,
                approx_step_rate: f.approx_step_rate(c),
            }
        }),
    }
}

impl BuildReport {
    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let opts: Vec<String> = self.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "circuit {:?}: {}", self.name, opts.join(", "));
        let widths: Vec<String> = self.tables_by_width.iter().map(|(w, n)| format!("{n} x {w}-bit")).collect();
        let _ = writeln!(
            s,
            "bootstraps per inference: {} (tables: {}; exact rounding: {}{})",
            self.total_bootstraps,
            if widths.is_empty() { "none".into() } else { widths.join(", ") },
            self.rounding_bootstraps,
            if self.rounding_bootstraps > 0 {
                format!(", in chunks of up to {} bits", self.round_chunk)
            } else if self.approx_rounded_values > 0 {
                format!("; approximate rounding of {} values, no bootstraps", self.approx_rounded_values)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "widest table read: {} bits; max noise 2-norm into a bootstrap: {:.1}; input: {} bits; widest value: {} bits",
            self.max_table_width, self.max_norm2, self.input_bits, self.max_value_width
        );
        let _ = writeln!(
            s,
            "{:<44} {:<10} {:<18} {:>24} {:>5} {:>9} {:>8} {:>6}",
            "node", "op", "shape", "range", "bits", "2-norm", "tables", "round"
        );
        for l in &self.layers {
            let _ = writeln!(
                s,
                "{:<44} {:<10} {:<18} {:>24} {:>5} {:>9.1} {:>8} {:>6}",
                truncate(&l.name, 44),
                l.op,
                format!("{:?}", l.shape),
                format!("[{}, {}]", l.range[0], l.range[1]),
                l.table_width.map_or(l.width.to_string(), |w| format!("{w}*")),
                l.norm2,
                l.tables,
                l.rounding
            );
        }
        let _ = writeln!(s, "(* = width the node's tables read)");
        match &self.fhe {
            Some(f) => {
                let p = &f.params;
                let _ = writeln!(
                    s,
                    "TFHE parameters: n={} k={} N={} σ_lwe=2^{:.1} σ_glwe=2^{:.1} PBS {}x2^{} KS {}x2^{}",
                    p.lwe_dimension,
                    p.glwe_dimension,
                    p.polynomial_size,
                    p.lwe_noise_std.log2(),
                    p.glwe_noise_std.log2(),
                    p.pbs_level,
                    p.pbs_base_log,
                    p.ks_level,
                    p.ks_base_log
                );
                let round = p.round_key.map(|r| (r, r.bootstrap));
                if let Some((r, None)) = round {
                    let _ = writeln!(
                        s,
                        "input key: the first {} coefficients of the main GLWE key (σ=2^{:.1}; inputs are encrypted under it and results switched to it; no bootstrap key of its own)",
                        r.glwe_dimension * r.polynomial_size,
                        r.glwe_noise_std.log2()
                    );
                } else if let Some((r, Some(d))) = round {
                    let _ = writeln!(
                        s,
                        "rounding bootstrap: k={} N={} σ_glwe=2^{:.1} PBS {}x2^{} (a key sharing the first {} coefficients of the main GLWE key; {} of the {} bootstraps)",
                        r.glwe_dimension,
                        r.polynomial_size,
                        r.glwe_noise_std.log2(),
                        d.level,
                        d.base_log,
                        r.glwe_dimension * r.polynomial_size,
                        self.rounding_bootstraps,
                        self.total_bootstraps
                    );
                }
                let _ = writeln!(
                    s,
                    "security: {:.0} bits (128-bit curve met); failure probability: 2^{:.1} per bootstrap, 2^{:.1} per inference",
                    f.security_bits,
                    f.p_error.max(1e-300).log2(),
                    f.global_p_error.max(1e-300).log2()
                );
                if self.approx_rounded_values > 0 {
                    let _ = writeln!(
                        s,
                        "approximate rounding: about {:.1}% of rounded reads land one step off (not counted as failures; `fhec eval --mode simulate` samples them)",
                        100.0 * f.approx_step_rate
                    );
                }
                let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
                let _ = writeln!(
                    s,
                    "evaluation key {:.1} MiB (seeded; {:.1} MiB in server memory); per image: upload {:.1} KiB, download {:.1} KiB; estimated server time {:.1} s on one core",
                    mib(f.evaluation_key_bytes),
                    mib(f.bootstrap_key_bytes + f.keyswitch_key_bytes),
                    f.upload_bytes as f64 / 1024.0,
                    f.download_bytes as f64 / 1024.0,
                    f.est_latency_ms_one_core / 1000.0
                );
            }
            None => {
                let _ = writeln!(s, "TFHE: no 128-bit parameters for this circuit (see options.fhe); simulation only");
            }
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("…{}", s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect::<String>())
    }
}
