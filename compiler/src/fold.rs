//! Folding a keyed image transform into a compiled circuit: the opposite route to training
//! a model on transformed images ([`fhec_ir::transform`]).
//!
//! EtC block scrambling and SKK pixel negation are linear pixel maps: every transformed
//! pixel is one source pixel `p`, or `255 - p`. A model trained on plain images then accepts
//! transformed images if its circuit first puts the pixels back. [`fold_transform`] adds that
//! step as one [`COp::Gather`] right after the input: it moves the ciphertexts and negates
//! some (`max·Δ - ct`), which costs no bootstrap and keeps the noise. The input map of the
//! bundled widths is symmetric (`q(255 - p) = q(0) + q(255) - q(p)`), so the gather gives the
//! plain model's integer input exactly, and every later node (ranges, norms, tables) is the
//! plain circuit's: the folded circuit costs what the plain one costs, and classifies a
//! transformed image as the plain circuit classifies the original.
//!
//! **The folded circuit holds the transform's map** (the gather's source and negation of
//! every pixel), which is all a key does: whoever holds the artifact can undo the transform.
//! The key's bytes themselves are not in it. Tanaka's scheme splits each pixel into two
//! 4-bit values, which is not linear in the pixel, so it is not folded: train on it instead.

use fhec_ir::artifact::Artifact;
use fhec_ir::circuit::{CNode, COp, Circuit, verify::verify};
use fhec_ir::transform::{Plan, Transform};

use crate::analysis::{noise, range};
use crate::params::{ParamOptions, select_rounding};

/// Metadata key marking a circuit whose transform is folded in (value `true`); the
/// transform itself is under [`Transform::METADATA_KEY`] as for a model trained on it.
pub const FOLDED_KEY: &str = "fhec.transform.folded";

/// Why a transform cannot be folded into a circuit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FoldError {
    /// Tanaka's split is not a linear pixel map.
    #[error(
        "{0} cannot be folded into a model: it splits every pixel into two 4-bit values, which is not a linear map of the pixels (train the model on {0} instead: examples/train/train.py --transform)"
    )]
    NotLinear(Transform),
    /// The model already takes transformed images.
    #[error(
        "the model already takes images through the keyed transform {0} (its fhec.transform metadata); fold a transform into a model trained on plain images"
    )]
    AlreadyTransformed(Transform),
    /// The plan is for another image size than the circuit's input.
    #[error(
        "the transform's map is for images of shape {plan:?} (channels, height, width) and the model's input is {shape:?}"
    )]
    Shape {
        /// The plan's output shape.
        plan: [usize; 3],
        /// The circuit's input shape.
        shape: Vec<usize>,
    },
    /// The input map does not commute with negation, so `255 - p` has no integer form.
    #[error(
        "the model's input quantization is not symmetric (pixel {pixel} maps to {q}, pixel {mirror} to {q_mirror}, and q(0) + q(255) = {sum}): a negated pixel cannot be undone on its integers; compile without a quantized input grid (e.g. --input-bits)"
    )]
    Asymmetric {
        /// A pixel value.
        pixel: u8,
        /// Its integer.
        q: i64,
        /// `255 - pixel`.
        mirror: u8,
        /// Its integer.
        q_mirror: i64,
        /// `q(0) + q(255)`.
        sum: i64,
    },
    /// The folded circuit failed a verifier (a bug).
    #[error("internal error folding the transform: {0}")]
    Internal(String),
}

/// Whether `t` is a linear pixel map, which a circuit can undo ([`FoldError::NotLinear`] for
/// Tanaka's scheme).
pub fn foldable(t: Transform) -> Result<(), FoldError> {
    match t {
        Transform::Etc { .. } | Transform::Skk => Ok(()),
        Transform::Tanaka { .. } => Err(FoldError::NotLinear(t)),
    }
}

/// `c` taking images transformed by `t` (with `plan`, its map for the key): a gather that
/// undoes the transform right after the input, then `c` unchanged. The metadata names the
/// transform ([`Transform::METADATA_KEY`]) so that clients apply it with their key, and
/// marks it folded ([`FOLDED_KEY`]).
pub fn fold_transform(c: &Circuit, t: Transform, plan: &Plan) -> Result<Circuit, FoldError> {
    foldable(t)?;
    if plan.max != 255 || plan.shape[0] != 1 {
        return Err(FoldError::NotLinear(t));
    }
    if let Ok(Some(had)) = Transform::of_metadata(&c.metadata, c.input_shape()) {
        return Err(FoldError::AlreadyTransformed(had));
    }
    let shape = c.input_shape();
    if t.image_size(shape).ok() != Some((plan.shape[1], plan.shape[2])) {
        return Err(FoldError::Shape { plan: plan.shape, shape: shape.to_vec() });
    }
    let input = plan.src.len();
    let q = &c.input_quant.pixel_to_q;
    let sum = q[0] + q[255];
    if let Some(p) = (0..=255u8).find(|&p| q[(255 - p) as usize] != sum - q[p as usize]) {
        let m = 255 - p;
        return Err(FoldError::Asymmetric { pixel: p, q: q[p as usize], mirror: m, q_mirror: q[m as usize], sum });
    }
    // Transformed value i is source pixel src[i] (negated if negate[i]), so source pixel j
    // is transformed value inv[j].
    let mut src = vec![0u32; input];
    let mut negate = vec![false; input];
    for (i, (&s, &n)) in plan.src.iter().zip(&plan.negate).enumerate() {
        src[s as usize] = i as u32;
        negate[s as usize] = n;
    }
    let shifted = |n: &CNode| CNode { inputs: n.inputs.iter().map(|&i| i + 1).collect(), ..n.clone() };
    let input_node = &c.nodes[0];
    let gather = CNode {
        name: format!("{}.untransform", input_node.name),
        op: COp::Gather { src, negate, max: sum },
        inputs: vec![0],
        // Symmetric: a negated value stays inside the input's range.
        ..input_node.clone()
    };
    let mut nodes = vec![input_node.clone(), gather];
    nodes.extend(c.nodes[1..].iter().map(shifted));
    let mut metadata = c.metadata.clone();
    metadata.insert(Transform::METADATA_KEY.into(), t.to_string());
    metadata.insert(FOLDED_KEY.into(), "true".into());
    let folded = Circuit { nodes, output: c.output + 1, metadata, ..c.clone() };
    verify(&folded).map_err(|e| FoldError::Internal(e.to_string()))?;
    range::verify(&folded).map_err(|e| FoldError::Internal(e.to_string()))?;
    noise::verify(&folded).map_err(|e| FoldError::Internal(e.to_string()))?;
    Ok(folded)
}

/// [`fold_transform`] on an artifact's circuit, with its parameters chosen again (they are
/// the plain circuit's: the gather adds no bootstrap and no noise) and the fold recorded in
/// its options.
pub fn fold_artifact(a: &Artifact, t: Transform, plan: &Plan, params: &ParamOptions) -> Result<Artifact, FoldError> {
    let mut circuit = fold_transform(&a.circuit, t, plan)?;
    let mut options = a.options.clone();
    options.insert(
        "transform".into(),
        format!(
            "{t}, folded: the circuit undoes it first (a gather, no bootstrap); the artifact holds its map, not the key"
        ),
    );
    let fhe = if a.fhe.is_some() {
        Some(select_rounding(&mut circuit, params).map_err(|e| FoldError::Internal(e.to_string()))?)
    } else {
        None
    };
    Ok(Artifact { circuit, options, fhe, ..a.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhec_ir::circuit::{InputQuant, OutputQuant, Range};
    use fhec_ir::sim;
    use fhec_ir::transform::TransformKey;
    use ndarray::Array2;

    /// A 4x4 image -> dense 16 -> 3 -> a 3-bit table: enough to see every pixel.
    fn circuit() -> Circuit {
        let w = Array2::from_shape_fn((3, 16), |(o, k)| ((o * 7 + k * 3) % 5) as i64 - 2);
        let node = |name: &str, op, inputs: Vec<usize>, shape: Vec<usize>, range, norm2| CNode {
            name: name.into(),
            op,
            inputs,
            shape,
            range,
            norm2,
        };
        let r = Range { min: 0, max: 15 };
        let nodes = vec![
            node("x", COp::Input { bits: 4 }, vec![], vec![1, 1, 4, 4], r, 1.0),
            node("flat", COp::Reshape, vec![0], vec![1, 16], r, 1.0),
            node("fc", COp::Dense { weight: w }, vec![1], vec![1, 3], r, 1.0),
        ];
        let mut c = Circuit {
            name: "tiny".into(),
            metadata: Default::default(),
            nodes,
            output: 2,
            input_quant: InputQuant {
                pixel_to_q: (0..256).map(|p| (p as f64 * 15.0 / 255.0).round() as i64).collect(),
            },
            output_quant: OutputQuant { scale: vec![1.0; 3], offset: vec![0.0; 3] },
            round_chunk: 1,
            output_bits: None,
        };
        let vars = noise::analyze(&c);
        for (n, v) in c.nodes.iter_mut().zip(&vars) {
            n.norm2 = noise::norm2(v);
        }
        let r = range::analyze(&c);
        for (n, iv) in c.nodes.iter_mut().zip(&r) {
            n.range = iv.range();
        }
        c
    }

    #[test]
    fn the_folded_circuit_on_transformed_images_is_the_plain_one_on_the_originals() {
        let c = circuit();
        let key = TransformKey::from_bytes([3; 32]);
        let mut rng = 0x9e3779b97f4a7c15u64;
        for t in [Transform::Etc { block: 2 }, Transform::Skk] {
            let plan = t.plan(&key, 4, 4).unwrap();
            let f = fold_transform(&c, t, &plan).unwrap();
            assert_eq!(f.bootstrap_stats(), c.bootstrap_stats());
            assert_eq!(f.nodes[f.output].range, c.nodes[c.output].range);
            assert_eq!(f.nodes[f.output].norm2, c.nodes[c.output].norm2);
            assert_eq!(Transform::of_metadata(&f.metadata, f.input_shape()).unwrap(), Some(t));
            for _ in 0..50 {
                let image: Vec<u8> = (0..16)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng as u8
                    })
                    .collect();
                let transformed = t.apply(&key, &image, 4, 4).unwrap();
                let run = |c: &Circuit, px: &[u8]| sim::simulate(c, sim::encode_image(c, px)).unwrap();
                assert_eq!(run(&f, &transformed), run(&c, &image));
            }
            assert_eq!(fold_transform(&f, t, &plan), Err(FoldError::AlreadyTransformed(t)));
        }
    }

    #[test]
    fn tanaka_other_sizes_and_asymmetric_inputs_are_refused() {
        let c = circuit();
        let key = TransformKey::from_bytes([3; 32]);
        let t = Transform::Tanaka { block: 2 };
        let e = fold_transform(&c, t, &t.plan(&key, 4, 4).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a linear map"), "{e}");
        let e = fold_transform(&c, Transform::Skk, &Transform::Skk.plan(&key, 2, 4).unwrap()).unwrap_err();
        assert_eq!(e, FoldError::Shape { plan: [1, 2, 4], shape: vec![1, 1, 4, 4] });
        let mut a = c.clone();
        a.input_quant.pixel_to_q = (0..256).map(|p| p / 17).collect();
        let e = fold_transform(&a, Transform::Skk, &Transform::Skk.plan(&key, 4, 4).unwrap()).unwrap_err();
        assert!(matches!(e, FoldError::Asymmetric { .. }), "{e}");
    }
}
