//! The client part of a compiled model: everything a client needs to make keys, encrypt
//! images and decrypt results, and nothing of the model itself (no weight, no table, no
//! circuit node). A model owner ships it to clients and keeps the full artifact
//! ([`crate::artifact`]), which holds the circuit and its weights, on the server.
//!
//! File layout: the shared framing ([`crate::framing`]) with the 8-byte magic `FHECCLNT`, its
//! own format version ([`FORMAT_VERSION`]), a bincode payload and its checksum. Loading
//! checks the frame, decodes the payload and runs [`ClientSpec::verify`], so a truncated,
//! corrupt, foreign or inconsistent file is an error naming what is wrong, never a panic.
//!
//! [`ClientSpec::of`] (or [`Artifact::client_part`]) derives it from an artifact; a client
//! part and the artifact it came from give keys, encryptions and decryptions that agree bit
//! for bit. Its size depends only on the model's input and output (the input quantization
//! is 256 integers, the output dequantization two numbers per score), never on the weights.
//!
//! [`ClientSide`] is what the runtime's key generation, encryption and decryption read: a
//! [`ClientSpec`] provides it, and so does a [`ParametrizedCircuit`] (the full artifact's
//! circuit with its parameters), so both sides of a test can use either.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::Preprocess;
use crate::artifact::{Artifact, ArtifactError, ParametrizedCircuit};
use crate::circuit::{InputQuant, OutputQuant};
use crate::framing::{Format, FramingError};
use crate::params::{OutputEncoding, ResultForm, ResultKey, TfheParams, result_form_for};
use crate::transform::Transform;

/// File magic.
pub const MAGIC: &[u8; 8] = b"FHECCLNT";
/// Current format version.
pub const FORMAT_VERSION: u32 = 3;
/// Largest payload accepted (64 MiB: a client part is a few KiB for a classifier).
pub const MAX_PAYLOAD: u64 = 1 << 26;
/// The client part's framing.
pub const FORMAT: Format =
    Format { magic: *MAGIC, name: "an fhec client part", version: FORMAT_VERSION, max_payload: MAX_PAYLOAD };

/// Most values a client part's input or output may have (a grayscale image of 4096x4096).
pub const MAX_VALUES: usize = 1 << 24;

/// The client part of a compiled model (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientSpec {
    /// fhec version that built the model.
    pub fhec_version: String,
    /// Source model file name.
    pub source: String,
    /// The model's name (its graph's).
    pub model: String,
    /// The TFHE parameters the keys are made for.
    pub params: TfheParams,
    /// What the key pair must hold for these parameters.
    pub keys: KeyRequirements,
    /// How pixels become the encrypted input.
    pub input: InputEncoding,
    /// How the decrypted output becomes scores.
    pub output: OutputDecoding,
}

/// What a key pair made for a parameter set holds (all of it follows from the parameters;
/// recorded so that a client part states it and its verifier checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequirements {
    /// [`TfheParams::fingerprint`] of the parameters, which every key and ciphertext file
    /// of the pair starts with.
    pub fingerprint: u64,
    /// Dimension of the key inputs are encrypted under ([`TfheParams::input_dimension`]).
    pub input_dimension: usize,
    /// Whether the evaluation key holds a rounding bootstrap key ([`TfheParams::rounding_bsk`]).
    pub rounding_bootstrap_key: bool,
    /// Whether the evaluation key holds a result keyswitch key ([`TfheParams::result_ks`]).
    pub result_keyswitch_key: bool,
}

impl KeyRequirements {
    /// The requirements of `p`.
    pub fn of(p: &TfheParams) -> KeyRequirements {
        KeyRequirements {
            fingerprint: p.fingerprint(),
            input_dimension: p.input_dimension(),
            rounding_bootstrap_key: p.has_rounding_bsk(),
            result_keyswitch_key: p.result_ks().is_some(),
        }
    }
}

/// How a client turns 8-bit pixels into the circuit's encrypted input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputEncoding {
    /// The input's shape (`[1, 1, rows, cols]` for an image).
    pub shape: Vec<usize>,
    /// The model's pixel scaling (already folded into `quant`; for reports), if it names one.
    pub preprocess: Option<Preprocess>,
    /// Pixel value -> input integer.
    pub quant: InputQuant,
    /// Bits of the input's encoding (`Δ = 2^(63 - bits)`).
    pub bits: u32,
    /// The keyed image transform the model was trained for (its `fhec.transform`
    /// metadata), which the client applies with its own key before quantizing: the input is
    /// then [`Transform::model_input`] of an image of [`Transform::image_size`] of `shape`.
    /// Only the scheme: the key never leaves the client.
    pub transform: Option<Transform>,
}

/// How a client turns a decrypted result into scores, and which result forms it accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputDecoding {
    /// The output's shape, encoding and noise (what judging a result's form needs).
    pub encoding: OutputEncoding,
    /// Output integer -> score.
    pub quant: OutputQuant,
    /// The form a server returns results in ([`crate::params::result_form`]).
    pub result_form: ResultForm,
}

/// Why a client part could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum ClientSpecError {
    /// Not a client part: another fhec file, or not an fhec file at all.
    #[error("not an fhec client part ({0})")]
    Kind(&'static str),
    /// Written by an incompatible fhec.
    #[error("client part format version {found} is not supported (this fhec reads version {FORMAT_VERSION})")]
    Version {
        /// Version in the file.
        found: u32,
    },
    /// Truncated, oversized or corrupt.
    #[error("client part: {0}")]
    Framing(FramingError),
    /// The payload does not decode.
    #[error("client part payload does not decode: {0}")]
    Decode(String),
    /// The contents are inconsistent.
    #[error("client part is invalid: {0}")]
    Invalid(String),
}

impl From<FramingError> for ClientSpecError {
    fn from(e: FramingError) -> ClientSpecError {
        match e {
            FramingError::WrongKind { .. } => ClientSpecError::Kind("bad magic bytes"),
            FramingError::Version { found, .. } => ClientSpecError::Version { found },
            e => ClientSpecError::Framing(e),
        }
    }
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_limit(MAX_PAYLOAD)
}

/// Number of values of `shape`, if every dimension is at least 1 and there are at most
/// [`MAX_VALUES`].
fn checked_values(shape: &[usize]) -> Option<usize> {
    let n = shape.iter().try_fold(1usize, |a, &d| if d == 0 { None } else { a.checked_mul(d) })?;
    (!shape.is_empty() && n <= MAX_VALUES).then_some(n)
}

impl ClientSpec {
    /// The client part of an artifact, or why it has none (an artifact without TFHE
    /// parameters: [`ArtifactError::NoParameters`]).
    pub fn of(art: &Artifact) -> Result<ClientSpec, ArtifactError> {
        let pc = art.parametrized()?;
        let spec = ClientSpec::of_parametrized(&art.fhec_version, &art.source, &pc)?;
        spec.verify().map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        Ok(spec)
    }

    /// The client part of a circuit under its parameters, named after `source` and built by
    /// fhec `fhec_version`.
    pub fn of_parametrized(
        fhec_version: &str,
        source: &str,
        pc: &ParametrizedCircuit<'_>,
    ) -> Result<ClientSpec, ArtifactError> {
        let (c, p) = (pc.circuit(), pc.params());
        let transform =
            Transform::of_metadata(&c.metadata, c.input_shape()).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        let encoding = OutputEncoding::of(pc.plan(), c)
            .ok_or_else(|| ArtifactError::Invalid("the circuit's output node does not exist".into()))?;
        Ok(ClientSpec {
            fhec_version: fhec_version.into(),
            source: source.into(),
            model: c.name.clone(),
            params: *p,
            keys: KeyRequirements::of(p),
            input: InputEncoding {
                shape: c.input_shape().to_vec(),
                preprocess: c.metadata.get(Preprocess::METADATA_KEY).and_then(|s| s.parse().ok()),
                quant: c.input_quant.clone(),
                bits: pc.input_bits(),
                transform,
            },
            output: OutputDecoding {
                result_form: result_form_for(p, &encoding),
                encoding,
                quant: c.output_quant.clone(),
            },
        })
    }

    /// Serializes the client part.
    pub fn to_bytes(&self) -> Vec<u8> {
        FORMAT.frame(&codec().serialize(self).expect("a client part always serializes"))
    }

    /// Whether bytes start like a client part.
    pub fn sniff(bytes: &[u8]) -> bool {
        FORMAT.sniff(bytes)
    }

    /// Parses and verifies a client part. A full artifact is refused with an error that says
    /// so (derive its client part with [`ClientSpec::of`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<ClientSpec, ClientSpecError> {
        if Artifact::sniff(bytes) {
            return Err(ClientSpecError::Kind("a full artifact, whose client part `fhec build` writes beside it"));
        }
        let payload = FORMAT.unframe(bytes)?;
        let spec: ClientSpec = codec().deserialize(payload).map_err(|e| ClientSpecError::Decode(e.to_string()))?;
        spec.verify()?;
        Ok(spec)
    }

    /// Checks that the parts agree: the parameters are possible key parameters
    /// ([`TfheParams::shape_error`]) and 128-bit secure, and the key
    /// requirements are theirs; the input and output shapes are non-empty, of at most
    /// [`MAX_VALUES`] values, with a quantization of the right size; the encodings fit the
    /// torus; and the result form is the one the output's encoding calls for.
    pub fn verify(&self) -> Result<(), ClientSpecError> {
        let bad = |m: String| Err(ClientSpecError::Invalid(m));
        let p = &self.params;
        // Before anything sizes memory by them (key generation would allocate terabytes).
        if let Some(m) = p.shape_error() {
            return bad(format!("its TFHE parameters are impossible: {m}"));
        }
        if !p.is_secure() {
            return bad(format!("its TFHE parameters ({}) are not 128-bit secure", p.summary()));
        }
        if self.keys != KeyRequirements::of(p) {
            return bad("its key requirements are not those of its TFHE parameters".into());
        }
        let input = &self.input;
        if checked_values(&input.shape).is_none() {
            return bad(format!("input shape {:?} is empty or has more than {MAX_VALUES} values", input.shape));
        }
        if let Some(t) = input.transform
            && let Err(e) = t.image_size(&input.shape)
        {
            return bad(format!("its input does not take the transform it names: {e}"));
        }
        if input.quant.pixel_to_q.len() != 256 {
            return bad(format!("its input quantization maps {} pixel values, not 256", input.quant.pixel_to_q.len()));
        }
        if !(1..=62).contains(&input.bits) {
            return bad(format!("its input is encoded on {} bits (1 to 62)", input.bits));
        }
        let out = &self.output.encoding;
        let Some(values) = checked_values(&out.shape) else {
            return bad(format!("output shape {:?} is empty or has more than {MAX_VALUES} values", out.shape));
        };
        let q = &self.output.quant;
        if q.scale.len() != values || q.offset.len() != values {
            return bad(format!(
                "its output dequantization has {} scales and {} offsets for {values} output values",
                q.scale.len(),
                q.offset.len()
            ));
        }
        if !(1..=62).contains(&out.bits) || !(1..=out.bits).contains(&out.read_bits) {
            return bad(format!("its output is encoded on {} bits and read on {}", out.bits, out.read_bits));
        }
        if !(out.norm2.is_finite() && out.norm2 >= 0.0) {
            return bad(format!("its output noise 2-norm {} is not a finite non-negative number", out.norm2));
        }
        if self.output.result_form != result_form_for(p, out) {
            return bad("its result form is not the one its output encoding calls for".into());
        }
        Ok(())
    }

    /// What the client part holds, in a few lines (`fhec inspect`).
    pub fn summary(&self) -> String {
        let (p, i, o, k) = (&self.params, &self.input, &self.output, &self.keys);
        let q = &i.quant.pixel_to_q;
        let (lo, hi) = (q.iter().min().copied().unwrap_or(0), q.iter().max().copied().unwrap_or(0));
        let mut extra = vec![];
        if k.rounding_bootstrap_key {
            extra.push("a rounding bootstrap key");
        }
        if k.result_keyswitch_key {
            extra.push("a result keyswitch key");
        }
        let extra = if extra.is_empty() { String::new() } else { format!(", {}", extra.join(", ")) };
        let key = match o.result_form.key {
            ResultKey::Glwe => "the GLWE key",
            ResultKey::Input => "the input key",
            ResultKey::Small => "the small key",
        };
        let read = if o.encoding.read_bits < o.encoding.bits {
            format!(", read to its top {} bits", o.encoding.read_bits)
        } else {
            String::new()
        };
        let mut s = String::new();
        s += &format!("client part of {} (model \"{}\", fhec {})\n", self.source, self.model, self.fhec_version);
        s += "holds no weight and no circuit: the server keeps the full artifact\n";
        s += &format!("parameters: {} (fingerprint {:016x})\n", p.summary(), k.fingerprint);
        s += &format!(
            "keys: client key (small key n={}, GLWE key k={} N={}; inputs under {} of its {} coefficients); evaluation key: keyswitch and bootstrap keys{extra}\n",
            p.lwe_dimension,
            p.glwe_dimension,
            p.polynomial_size,
            k.input_dimension,
            p.big_dimension()
        );
        s += &format!(
            "input: shape {:?}, preprocess {}, pixels 0..255 -> integers {lo}..{hi}, encoded on {} bits (delta 2^{})\n",
            i.shape,
            i.preprocess.map_or("(folded into the quantization)".to_string(), |p| p.to_string()),
            i.bits,
            63 - i.bits
        );
        if let Some(t) = i.transform {
            s += &format!(
                "input transform: {t} (keyed image transform applied by the client with its own key file before encryption; not encryption)\n"
            );
        }
        s += &format!(
            "output: shape {:?}, encoded on {} bits{read}, noise 2-norm {:.3}; scores = scale * value + offset\n",
            o.encoding.shape, o.encoding.bits, o.encoding.norm2
        );
        s += &format!("results: under {key}, {} bits per coefficient\n", o.result_form.word_bits);
        s
    }
}

impl Artifact {
    /// The client part of this artifact ([`ClientSpec::of`]): what to ship to clients.
    pub fn client_part(&self) -> Result<ClientSpec, ArtifactError> {
        ClientSpec::of(self)
    }
}

/// What a client's key generation, encryption and decryption read: the parameters, the
/// input encoding and the output decoding. Provided by a [`ClientSpec`] (the client part)
/// and by a [`ParametrizedCircuit`] (the full artifact's circuit), which agree for the same
/// model.
pub trait ClientSide {
    /// The TFHE parameters.
    fn params(&self) -> &TfheParams;
    /// The input's shape.
    fn input_shape(&self) -> &[usize];
    /// Bits of the input's encoding.
    fn input_bits(&self) -> u32;
    /// Pixel value -> input integer.
    fn input_quant(&self) -> &InputQuant;
    /// The output's shape, encoding and noise (`None` for a circuit without its output node).
    fn output_encoding(&self) -> Option<OutputEncoding>;
    /// Output integer -> score.
    fn output_quant(&self) -> &OutputQuant;
}

impl ClientSide for ClientSpec {
    fn params(&self) -> &TfheParams {
        &self.params
    }
    fn input_shape(&self) -> &[usize] {
        &self.input.shape
    }
    fn input_bits(&self) -> u32 {
        self.input.bits
    }
    fn input_quant(&self) -> &InputQuant {
        &self.input.quant
    }
    fn output_encoding(&self) -> Option<OutputEncoding> {
        Some(self.output.encoding.clone())
    }
    fn output_quant(&self) -> &OutputQuant {
        &self.output.quant
    }
}

impl ClientSide for ParametrizedCircuit<'_> {
    fn params(&self) -> &TfheParams {
        ParametrizedCircuit::params(self)
    }
    fn input_shape(&self) -> &[usize] {
        self.circuit().input_shape()
    }
    fn input_bits(&self) -> u32 {
        ParametrizedCircuit::input_bits(self)
    }
    fn input_quant(&self) -> &InputQuant {
        &self.circuit().input_quant
    }
    fn output_encoding(&self) -> Option<OutputEncoding> {
        OutputEncoding::of(self.plan(), self.circuit())
    }
    fn output_quant(&self) -> &OutputQuant {
        &self.circuit().output_quant
    }
}
