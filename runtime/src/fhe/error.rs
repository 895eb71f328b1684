//! Why a key, a ciphertext or an evaluation is refused.

use fhec_ir::framing::FramingError;

/// A failure of encrypted execution: bytes that are not a valid key or ciphertext, a key or
/// ciphertext of other parameters or of another shape than the circuit's, or a circuit the
/// parameters cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FheError {
    /// Bytes that are not a framed key or ciphertext file at all.
    #[error("not an fhec key or ciphertext file")]
    NotAFile,
    /// A file of another kind than the one expected.
    #[error(
        "the file holds {found} but {expected} is expected{}",
        if *other_params { " (and it was made for other TFHE parameters than this circuit's)" } else { "" }
    )]
    WrongKind {
        /// What the file holds ("a client key").
        found: &'static str,
        /// What was expected.
        expected: &'static str,
        /// Whether it was also made for other parameters.
        other_params: bool,
    },
    /// The frame is truncated, corrupt, oversized or of another format version.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The payload does not decode.
    #[error("{what} does not decode: {message}")]
    Decode {
        /// What was decoded ("client key").
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A key or ciphertext made for other TFHE parameters, or a key that does not match its
    /// parameters.
    #[error("{0}")]
    ParamsMismatch(String),
    /// Parameters tfhe-rs would not accept (dimensions, decompositions, sizes).
    #[error("the TFHE parameters are invalid ({0})")]
    InvalidParams(String),
    /// A tensor whose shape, value count, encoding or byte count is not what it must be.
    #[error("{0}")]
    Shape(String),
    /// A file made with another key pair than the key it is used with (a client key and an
    /// evaluation key generated separately, an image of another client, a result computed
    /// with another client's evaluation key).
    #[error(
        "{what} belongs to key pair {found} but the {key} is of key pair {expected}: use the client key and the evaluation key generated together (by one `fhec keygen`)"
    )]
    KeyPairMismatch {
        /// What was checked ("the encrypted image").
        what: &'static str,
        /// Its key pair.
        found: super::KeyPairId,
        /// The key it was used with ("evaluation key").
        key: &'static str,
        /// That key's pair.
        expected: super::KeyPairId,
    },
    /// A ciphertext file that names no key pair where one is required.
    #[error("{0} is not bound to a key pair (made with the low-level API's to_bytes; use to_bytes_bound)")]
    Unbound(&'static str),
    /// What the circuit or the request needs and the parameters or keys do not provide.
    #[error("{0}")]
    Unsupported(String),
}
