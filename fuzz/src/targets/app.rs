//! The application API on bytes: `Client::decrypt` of a server's result and
//! `Server::classify` of a client's encrypted image, for a tiny model (a 2x2 image, dense
//! 4 -> 3, relu, dense 3 -> 2) with 128-bit parameters chosen by the compiler, as the
//! runtime's own tests use. The keys are generated once per process.
//!
//! Inputs are stored with a placeholder key pair identity ([`PLACEHOLDER`]): a sound frame
//! that carries it runs with the identity of this process's keys, so that a saved input
//! replays the same way with fresh keys.
//!
//! Properties beyond "no panic": every refusal is an error with a message, and a result the
//! server returns decrypts. An image that passes every check is evaluated (3 bootstraps),
//! at most one in [`EVALUATE_EVERY`] of them, to keep campaigns fast.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use fhec_compiler::params::{ParamOptions, select};
use fhec_compiler::quantize::{QuantOptions, RangeMode, compile_circuit};
use fhec_ir::artifact::{Artifact, ParametrizedCircuit};
use fhec_ir::nn::{Graph, Op};
use fhec_runtime::app::{Client, Server};
use fhec_runtime::fhe::files::{Kind, kind_of};
use fhec_runtime::fhe::{ClientKey, CtTensor, SeededCtTensor};
use ndarray::{Array1, Array2};
use rand::RngExt;

use super::{Outcome, Target, rejected};
use crate::framed;
use crate::mutate::Rng;

/// The key pair identity stored inputs carry ("fhecfuzz").
pub const PLACEHOLDER: u64 = u64::from_le_bytes(*b"fhecfuzz");

/// At most one in this many valid images is evaluated.
pub const EVALUATE_EVERY: u64 = 8;

/// The client and server of the tiny model.
pub struct App {
    /// The artifact's bytes (with parameters).
    pub artifact: Vec<u8>,
    /// The artifact.
    pub art: Artifact,
    /// The client's secret key.
    pub key: ClientKey,
    /// The client (holding `key`).
    pub client: Client,
    /// The server (with the client's evaluation key).
    pub server: Server,
    valid_images: AtomicU64,
}

impl App {
    fn pc(&self) -> ParametrizedCircuit<'_> {
        self.art.parametrized().expect("the fuzz artifact has parameters")
    }

    /// The bytes as this process runs them: the placeholder pair replaced by this run's.
    fn live(&self, b: &[u8]) -> Vec<u8> {
        framed::swap_pair(b, PLACEHOLDER, self.key.pair().0)
    }

    /// The bytes as they are stored: this run's pair replaced by the placeholder.
    fn stored(&self, b: &[u8]) -> Vec<u8> {
        framed::swap_pair(b, self.key.pair().0, PLACEHOLDER)
    }
}

/// The tiny model: `x [1, 1, 2, 2] -> reshape [1, 4] -> dense 4 -> 3 -> relu -> dense 3 -> 2`.
pub fn tiny_graph() -> Graph {
    let mut g = Graph::new("fuzz");
    let x = g.add_input("x", vec![1, 1, 2, 2]);
    let flat = g.add_op_with_shape("flat", Op::Reshape, &[x], &[1, 4]).expect("reshape");
    let w1 = Array2::from_shape_fn((3, 4), |(o, i)| ((o * 5 + i * 3) % 7) as f32 / 3.0 - 1.0);
    let d1 = g
        .add_op("fc1", Op::Dense { weight: w1, bias: Some(Array1::from(vec![0.1, -0.2, 0.3])) }, &[flat])
        .expect("dense");
    let r = g.add_op("relu", Op::Relu, &[d1]).expect("relu");
    let w2 = Array2::from_shape_fn((2, 3), |(o, i)| ((o * 7 + i * 2) % 5) as f32 / 2.0 - 1.0);
    let d2 = g.add_op("fc2", Op::Dense { weight: w2, bias: None }, &[r]).expect("dense");
    g.add_output(d2);
    g
}

/// Deterministic 4-pixel images.
pub fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (0..4).map(|j| ((i * 67 + j * 101) % 256) as u8).collect()).collect()
}

/// The tiny model's artifact, with 128-bit parameters.
pub fn artifact() -> Artifact {
    let calib = images(16);
    let refs: Vec<&[u8]> = calib.iter().map(|v| v.as_slice()).collect();
    let opts = QuantOptions {
        input_bits: 3,
        weight_bits: 3,
        act_bits: 3,
        max_table_bits: 4,
        ranges: RangeMode::Exact,
        ..Default::default()
    };
    let c = compile_circuit(&tiny_graph(), fhec_ir::Preprocess::Unit, &refs, &opts).expect("the tiny model compiles");
    let setup = select(&c, &ParamOptions::default()).expect("128-bit parameters exist for the tiny model");
    Artifact {
        fhec_version: "fuzz".into(),
        source: "fuzz".into(),
        options: Default::default(),
        circuit: c,
        fhe: Some(setup),
    }
}

/// The client and server (made once per process: a few seconds).
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let artifact = artifact().to_bytes();
        let a = Artifact::from_bytes(&artifact).expect("the fuzz artifact loads");
        let key = ClientKey::generate_for(&a.parametrized().expect("parameters"));
        let client = Client::with_key(&artifact, &key.to_bytes()).expect("the client loads its key");
        let server = Server::new(&artifact, &client.evaluation_key()).expect("the server loads the evaluation key");
        App { artifact, art: a, key, client, server, valid_images: AtomicU64::new(0) }
    })
}

/// `Client::decrypt`.
pub struct ClientDecrypt;

/// `Server::classify`.
pub struct ServerClassify;

impl Target for ClientDecrypt {
    fn name(&self) -> &'static str {
        "client-decrypt"
    }

    fn about(&self) -> &'static str {
        "app::Client::decrypt of a result (tiny model, 128-bit parameters)"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let app = app();
        let pc = app.pc();
        let (p, c) = (pc.params(), pc.circuit());
        let mut out = vec![];
        for px in images(2) {
            let image = app.client.encrypt(&px).expect("encrypts");
            let result = app.server.classify(&image).expect("classifies");
            out.push(app.stored(&result));
            out.push(framed::swap_pair(&result, app.key.pair().0, 0));
            out.push(app.stored(&image));
        }
        let out_node = &c.nodes[c.output];
        let values = vec![1i64; out_node.shape.iter().product()];
        let full = app.key.encrypt(&values, &out_node.shape, pc.plan().bits[c.output]);
        out.push(app.stored(&full.to_bytes_bound(p, app.key.pair())));
        out
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        mutate_app(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let app = app();
        match app.client.decrypt(&app.live(input)) {
            Ok(p) => Ok(Outcome::Accepted(format!("prediction of {} scores", p.scores.len()))),
            Err(e) => rejected(e),
        }
    }
}

impl Target for ServerClassify {
    fn name(&self) -> &'static str {
        "server-classify"
    }

    fn about(&self) -> &'static str {
        "app::Server::classify of an encrypted image (tiny model, 128-bit parameters): results decrypt"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let app = app();
        let pc = app.pc();
        let mut out = vec![];
        for px in images(2) {
            let image = app.client.encrypt(&px).expect("encrypts");
            out.push(app.stored(&app.server.classify(&image).expect("classifies")));
            out.push(app.stored(&image));
        }
        let px = &images(3)[2];
        let full = app.key.encrypt_image(&pc, px).expect("encrypts");
        out.push(app.stored(&full.to_bytes_bound(pc.params(), app.key.pair())));
        out.push(app.key.encrypt_image_seeded(&pc, px).expect("encrypts").to_bytes(pc.params()));
        out.push(app.stored(&app.key.to_bytes()));
        out
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        mutate_app(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let app = app();
        let b = app.live(input);
        if would_evaluate(app, &b) && !app.valid_images.fetch_add(1, Ordering::Relaxed).is_multiple_of(EVALUATE_EVERY) {
            return Ok(Outcome::Accepted("valid image (evaluation skipped)".into()));
        }
        match app.server.classify(&b) {
            Ok(result) => {
                app.client.decrypt(&result).map_err(|e| format!("a result of the server does not decrypt: {e}"))?;
                Ok(Outcome::Accepted("classified".into()))
            }
            Err(e) => rejected(e),
        }
    }
}

/// Whether the server would evaluate the image (every check before evaluation passes).
fn would_evaluate(app: &App, b: &[u8]) -> bool {
    let pc = app.pc();
    let pair_ok = fhec_runtime::fhe::files::pair_of(b) == Some(app.key.pair());
    pair_ok
        && match kind_of(b) {
            Some(Kind::Ciphertext) => CtTensor::from_bytes(b, pc.params()).is_ok(),
            Some(Kind::SeededImage) => SeededCtTensor::from_bytes(b, pc.params())
                .is_ok_and(|t| t.shape == pc.circuit().input_shape() && t.bits == pc.input_bits()),
            _ => false,
        }
}

/// A framing edit (with this run's pair, restored to the placeholder after the edit) or a
/// byte-level one.
fn mutate_app(input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let app = app();
    let m = if rng.random_bool(0.8) { framed::mutate(&app.live(input), other, rng)? } else { return None };
    Some(app.stored(&m))
}
