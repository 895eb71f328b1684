//! The application API: a [`Client`] and a [`Server`] that exchange only bytes.
//!
//! ```text
//!   client                                   server
//!   Client::new(client part)                 Server::new(artifact, evaluation key)
//!   evaluation_key() ───────────────────────▶
//!   encrypt(pixels) ────── encrypted image ─▶ classify(bytes)
//!   decrypt(bytes) ◀────── encrypted result ─┘
//! ```
//!
//! `fhec build` writes two files: the full artifact (`model.fhec`: the circuit, its weights
//! and its parameters), which the server loads and the model owner may keep private, and its
//! client part (`model.client.fhec`, [`ClientSpec`]: the parameters, the input encoding and
//! the output decoding, no weight), which is what to ship to clients. [`Client::new`] takes
//! either (from a full artifact it derives the client part); keys made from the client part
//! work with a [`Server`] made from the full artifact. The client's secret key never leaves
//! [`Client`]; [`Server`] is built from the evaluation key and cannot decrypt. Every byte
//! string is framed, versioned, checksummed and tied to the model's parameters, so a key or
//! ciphertext of another model is an error, not a wrong answer.
//!
//! The encrypted image is in seeded form ([`SeededCtTensor`]: one 8-byte body per input
//! value and the seed the server regenerates the masks from; [`crate::encrypted_image_bytes`]
//! gives its size, `BENCHMARKS.md` the measured ones).
//! The server also accepts an image of full ciphertexts ([`CtTensor::to_bytes`] of
//! [`ClientKey::encrypt_image`](crate::fhe::ClientKey::encrypt_image), 8(kN+1) bytes per
//! value), the form clients sent before.
//!
//! The evaluation key is in seeded form ([`SeededServerKey`](crate::fhe::SeededServerKey):
//! the keyswitch and bootstrap keys' bodies and the seeds the server regenerates their masks
//! from, in parallel, before converting the bootstrap key to the Fourier domain; about a
//! quarter of the full key, see [`crate::evaluation_key_bytes`] and `BENCHMARKS.md`).
//! The server also accepts the full key ([`ServerKey::to_bytes`] of
//! [`ClientKey::server_key`]), the form clients sent before.
//!
//! The encrypted result is in compact form ([`CompactCtTensor`]): keyswitched to a key with
//! fewer coefficients (the input key, `d + 1` per value instead of `kN + 1`, or the small
//! key) and every coefficient rounded to a few bytes, the smallest form the output's noise
//! allows ([`result_form`]). The client also accepts full ciphertexts.
//!
//! ```no_run
//! use fhec_runtime::app::{Client, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Client side: the client part, fresh keys, an encrypted image.
//! let client = Client::new(&std::fs::read("model.client.fhec")?)?;
//! let evaluation_key = client.evaluation_key();
//! let encrypted = client.encrypt(&[0u8; 28 * 28])?;
//! // Server side: the full artifact and the evaluation key only.
//! let server = Server::new(&std::fs::read("model.fhec")?, &evaluation_key)?;
//! let result = server.classify(&encrypted)?;
//! // Client side again.
//! println!("class {}", client.decrypt(&result)?.class);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::AtomicUsize;

use fhec_ir::artifact::{Artifact, ArtifactError, ParametrizedCircuit};
use fhec_ir::client::ClientSpecError;
use fhec_ir::params::result_form;
use fhec_ir::transform::{Transform, TransformError, TransformKey};

use crate::fhe::files::{Kind, kind_of, pair_of};
use crate::fhe::{
    ClientKey, CompactCtTensor, CtTensor, FheError, KeyPairId, SeededCtTensor, ServerKey, evaluate_with_progress,
};
use crate::sim;

pub use fhec_ir::client::ClientSpec;

/// Why a client or server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The artifact does not load.
    #[error("artifact: {0}")]
    Artifact(#[from] ArtifactError),
    /// The client part does not load.
    #[error("{0}")]
    ClientPart(#[from] ClientSpecError),
    /// Neither a client part nor an artifact.
    #[error("not an fhec client part or artifact (bad magic bytes)")]
    NotAModel,
    /// A client part where the server's full artifact is needed.
    #[error(
        "holds a client part (parameters and encodings, no circuit); the server needs the full artifact that `fhec build` writes beside it"
    )]
    ClientPartGiven,
    /// The artifact was compiled without TFHE parameters.
    #[error("the artifact has no TFHE parameters ({0}); rebuild it with narrower widths")]
    NoParameters(String),
    /// The model takes images through a keyed transform and the client has no key for it.
    #[error(
        "the model takes images through the keyed transform {0} (its client part names it): give the client the key file the model was trained with (Client::with_transform_key; `fhec encrypt --transform-key FILE`)"
    )]
    TransformKeyMissing(Transform),
    /// The image cannot be transformed (its size is not the model's image size).
    #[error("image: {0}")]
    Transform(#[from] TransformError),
    /// A key or ciphertext is wrong for this model, or evaluation failed.
    #[error("{what}: {source}")]
    Fhe {
        /// Which input.
        what: &'static str,
        /// The underlying error.
        source: FheError,
    },
}

fn no_parameters(e: ArtifactError) -> AppError {
    match e {
        ArtifactError::NoParameters { reason } => AppError::NoParameters(reason),
        e => AppError::Artifact(e),
    }
}

/// The artifact's circuit with its parameters, or why it has none.
fn parametrized(art: &Artifact) -> Result<ParametrizedCircuit<'_>, AppError> {
    art.parametrized().map_err(no_parameters)
}

/// The client part in `model`: a client part file, or derived from a full artifact.
pub fn load_client_part(model: &[u8]) -> Result<ClientSpec, AppError> {
    if ClientSpec::sniff(model) {
        return Ok(ClientSpec::from_bytes(model)?);
    }
    if !Artifact::sniff(model) {
        return Err(AppError::NotAModel);
    }
    Artifact::from_bytes(model)?.client_part().map_err(no_parameters)
}

/// [`parametrized`] of a server's artifact, checked to have parameters when the server was made.
fn checked(art: &Artifact) -> ParametrizedCircuit<'_> {
    art.parametrized().expect("checked when the server was made")
}

fn fhe(what: &'static str) -> impl Fn(FheError) -> AppError {
    move |source| AppError::Fhe { what, source }
}

/// A decrypted classification.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The predicted class (argmax of the scores).
    pub class: usize,
    /// The model's output scores (dequantized logits).
    pub scores: Vec<f64>,
    /// The decrypted output integers (what the simulator computes).
    pub raw: Vec<i64>,
}

/// The client: holds the secret key, encrypts images and decrypts results. It needs only
/// the model's client part ([`ClientSpec`]).
pub struct Client {
    spec: ClientSpec,
    key: ClientKey,
    /// The key of the keyed image transform the client part names, if given.
    transform_key: Option<TransformKey>,
}

impl Client {
    /// Loads a model's client part (or a full artifact, whose client part it derives) and
    /// generates fresh keys for it.
    pub fn new(model: &[u8]) -> Result<Client, AppError> {
        Client::for_spec(load_client_part(model)?)
    }

    /// Generates fresh keys for a client part already in memory (verified first).
    pub fn for_spec(spec: ClientSpec) -> Result<Client, AppError> {
        spec.verify()?;
        let key = ClientKey::generate_for(&spec);
        Ok(Client { spec, key, transform_key: None })
    }

    /// Loads a model's client part (or a full artifact) and a client key saved by
    /// [`Client::secret_key`].
    pub fn with_key(model: &[u8], secret_key: &[u8]) -> Result<Client, AppError> {
        let spec = load_client_part(model)?;
        let key = ClientKey::from_bytes(secret_key, &spec.params).map_err(fhe("client key"))?;
        Ok(Client { spec, key, transform_key: None })
    }

    /// The client with the key of its keyed image transform: when the client part names one
    /// (`InputEncoding::transform`, from the model's `fhec.transform` metadata), every image
    /// is transformed with this key before it is quantized and encrypted. The key stays in
    /// the client: nothing it sends depends on it except through the encrypted image. A
    /// model without a transform ignores the key.
    pub fn with_transform_key(self, key: TransformKey) -> Client {
        Client { transform_key: Some(key), ..self }
    }

    /// The transform the model takes its images through, if any.
    pub fn transform(&self) -> Option<Transform> {
        self.spec.input.transform
    }

    /// The values the model's input holds for an image: the pixels themselves, or for a
    /// model that names a keyed transform the image transformed with the client's key
    /// ([`Transform::model_input`]; the image is then `h x w` for the model's input shape
    /// `[.., channels, h, w]`). What [`Client::encrypt`] quantizes and encrypts, and what the
    /// simulator takes.
    pub fn input_values(&self, pixels: &[u8]) -> Result<Vec<u8>, AppError> {
        let Some(t) = self.spec.input.transform else { return Ok(pixels.to_vec()) };
        let key = self.transform_key.as_ref().ok_or(AppError::TransformKeyMissing(t))?;
        let (h, w) = t.image_size(&self.spec.input.shape)?;
        let plan = t.plan(key, h, w)?;
        Ok(t.model_input(&plan, pixels)?)
    }

    /// The secret key, to store on the client (never send it).
    pub fn secret_key(&self) -> Vec<u8> {
        self.key.to_bytes()
    }

    /// The evaluation key to send to the server, in seeded form (derived anew on every call:
    /// keep the bytes; [`crate::evaluation_key_bytes`] long).
    pub fn evaluation_key(&self) -> Vec<u8> {
        self.key.seeded_server_key().to_bytes()
    }

    /// The model's client part.
    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }

    /// Encrypts an image given as 8-bit grayscale pixels, row-major, of the model's input size
    /// (seeded form: about 8 bytes per pixel, see [`crate::encrypted_image_bytes`]). For a
    /// model that names a keyed transform, the image is the original one (`h x w`), which
    /// is transformed with the key of [`Client::with_transform_key`] first
    /// ([`Client::input_values`]); without that key it is an error
    /// ([`AppError::TransformKeyMissing`]).
    pub fn encrypt(&self, pixels: &[u8]) -> Result<Vec<u8>, AppError> {
        let values = self.input_values(pixels)?;
        let ct = self.key.encrypt_image_seeded(&self.spec, &values).map_err(fhe("image"))?;
        Ok(ct.to_bytes_bound(&self.spec.params, self.key.pair()))
    }

    /// Decrypts a result from [`Server::classify`].
    pub fn decrypt(&self, result: &[u8]) -> Result<Prediction, AppError> {
        if kind_of(result) == Some(Kind::SeededImage) {
            // An encrypted image (ours, if it loads) where the result is expected.
            SeededCtTensor::from_bytes(result, self.key.params()).map_err(fhe("encrypted result"))?;
            return Err(AppError::Fhe {
                what: "encrypted result",
                source: FheError::Shape("holds an encrypted image, not this model's result".into()),
            });
        }
        let raw = self.decrypt_result(result).map_err(fhe("encrypted result"))?;
        // After the result's own checks, so that a malformed result says what is wrong with it.
        check_pair(result, "the encrypted result", "client key", self.key.pair()).map_err(fhe("encrypted result"))?;
        let scores = self.spec.output.quant.scores(&raw);
        Ok(Prediction { class: sim::argmax(&scores), scores, raw })
    }

    /// The decrypted output values of a result: the compact form a [`Server`] returns
    /// (refused if it keeps fewer bytes per coefficient than this model's output noise
    /// allows), or full ciphertexts; either must hold this model's output shape and encoding.
    fn decrypt_result(&self, b: &[u8]) -> Result<Vec<i64>, FheError> {
        let (p, out) = (&self.spec.params, &self.spec.output.encoding);
        let (shape, bits) = (&out.shape, out.bits);
        let matches = |s: &Vec<usize>, b: u32| {
            if s != shape || b != bits {
                return Err(FheError::Shape(format!(
                    "holds a tensor of shape {s:?} on {b} bits, not this model's result ({shape:?} on {bits} bits)"
                )));
            }
            Ok(())
        };
        if kind_of(b) == Some(Kind::Ciphertext) {
            let t = CtTensor::from_bytes(b, p)?;
            matches(&t.shape, t.bits)?;
            return Ok(self.key.decrypt(&t));
        }
        let t = CompactCtTensor::from_bytes(b, p)?;
        matches(&t.shape, t.bits)?;
        if !t.form().decrypts_reliably_for(p, out) {
            let need = self.spec.output.result_form;
            return Err(FheError::Unsupported(format!(
                "keeps {} bits per coefficient under the {:?} key, too few for this model's output to decrypt reliably (a server sends {} under the {:?} key)",
                t.word_bits, t.key, need.word_bits, need.key
            )));
        }
        self.key.decrypt_compact(&t)
    }
}

/// Checks that a ciphertext file (already loaded, so well framed) belongs to key pair `want`.
fn check_pair(b: &[u8], what: &'static str, key: &'static str, want: KeyPairId) -> Result<(), FheError> {
    match pair_of(b) {
        Some(found) if found == want => Ok(()),
        Some(KeyPairId(0)) | None => Err(FheError::Unbound(what)),
        Some(found) => Err(FheError::KeyPairMismatch { what, found, key, expected: want }),
    }
}

/// The server: evaluates the model on encrypted images with the evaluation key only.
pub struct Server {
    /// An artifact with parameters.
    artifact: Artifact,
    key: ServerKey,
}

impl Server {
    /// Loads an artifact and a client's evaluation key: the seeded form
    /// ([`Client::evaluation_key`]; its masks are regenerated and its bootstrap key converted
    /// to the Fourier domain here, in parallel) or the full form.
    /// The full artifact is needed: a client part is refused ([`AppError::ClientPartGiven`]).
    pub fn new(artifact: &[u8], evaluation_key: &[u8]) -> Result<Server, AppError> {
        if ClientSpec::sniff(artifact) {
            return Err(AppError::ClientPartGiven);
        }
        let artifact = Artifact::from_bytes(artifact)?;
        let key =
            ServerKey::from_bytes(evaluation_key, parametrized(&artifact)?.params()).map_err(fhe("evaluation key"))?;
        Ok(Server { artifact, key })
    }

    /// Bootstraps one classification performs (the total for [`Server::classify_with_progress`]).
    pub fn bootstraps(&self) -> usize {
        self.artifact.circuit.bootstrap_stats().total()
    }

    /// Median seconds of one keyswitch + bootstrap at this model's parameters on the calling
    /// thread (see [`crate::fhe::one_bootstrap_seconds`]).
    #[cfg(feature = "probes")]
    pub fn one_bootstrap_seconds(&self, samples: usize) -> f64 {
        crate::fhe::one_bootstrap_seconds(&self.key, samples)
    }

    /// Of the [`Server::bootstraps`], those of exact rounding (done by the rounding bootstrap
    /// when the parameters have a rounding key).
    pub fn rounding_bootstraps(&self) -> usize {
        self.artifact.circuit.bootstrap_stats().rounding
    }

    /// [`Server::one_bootstrap_seconds`] for the rounding bootstrap (see
    /// [`crate::fhe::one_rounding_bootstrap_seconds`]).
    #[cfg(feature = "probes")]
    pub fn one_rounding_bootstrap_seconds(&self, samples: usize) -> f64 {
        crate::fhe::one_rounding_bootstrap_seconds(&self.key, samples)
    }

    /// Classifies an encrypted image; returns the encrypted result.
    pub fn classify(&self, encrypted_image: &[u8]) -> Result<Vec<u8>, AppError> {
        self.classify_with_progress(encrypted_image, &AtomicUsize::new(0))
    }

    /// [`Server::classify`], counting bootstraps done in `progress`.
    pub fn classify_with_progress(&self, encrypted_image: &[u8], progress: &AtomicUsize) -> Result<Vec<u8>, AppError> {
        let pc = checked(&self.artifact);
        let ct = self.load_image(&pc, encrypted_image).map_err(fhe("encrypted image"))?;
        check_pair(encrypted_image, "the encrypted image", "evaluation key", self.key.pair())
            .map_err(fhe("encrypted image"))?;
        let out = evaluate_with_progress(&self.key, &pc, &ct, progress).map_err(fhe("evaluation"))?;
        let (c, plan, p) = (pc.circuit(), pc.plan(), pc.params());
        let result = self.key.compact(&out, result_form(p, plan, c)).map_err(fhe("evaluation"))?;
        Ok(result.to_bytes_bound(p, self.key.pair()))
    }

    /// The input ciphertexts of an encrypted image: the seeded form (decompressed after its
    /// shape is checked against the model's input), or full ciphertexts.
    fn load_image(&self, pc: &ParametrizedCircuit<'_>, b: &[u8]) -> Result<CtTensor, FheError> {
        match kind_of(b) {
            Some(Kind::Ciphertext) => CtTensor::from_bytes(b, pc.params()),
            _ => SeededCtTensor::from_bytes(b, pc.params())?.decompress_input(pc),
        }
    }
}
