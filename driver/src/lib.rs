//! fhec's session layer, between the user-facing binaries (the `fhec` CLI, the benchmark
//! harness) and the libraries (`fhec-compiler`, `fhec-runtime`): what a model file implies
//! (its manifest entry, dataset, preprocessing, classes, image size), compiling it with the
//! automatic fit and the right calibration data, measuring accuracy, encrypted evaluation
//! runs, and the one policy for writing the user's files.
//!
//! It holds the defaults a user sees, so that every front end resolves them the same way;
//! the binaries above it only parse arguments, print and dispatch.
#![warn(missing_docs)]

pub mod compile;
#[cfg(feature = "fhe")]
pub mod encrypted;
pub mod files;
pub mod measure;
pub mod model;
pub mod progress;
#[cfg(feature = "fhe")]
pub mod reliability;
pub mod transform;

pub use compile::{CompileOptions, Compiled, compile_model, compile_model_with};

/// The message of an error and its causes, as `fhec` prints it: `context: cause: cause`,
/// leaving out a cause whose text the message already holds (errors that quote their
/// source, as most library errors do, would otherwise print it twice).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("artifact: {0}")]
    struct Quoting(#[from] std::io::Error);

    #[test]
    fn causes_already_quoted_are_printed_once() {
        let io = std::io::Error::other("truncated");
        let e = anyhow::Error::from(Quoting(io)).context("cannot use a.fhec");
        assert_eq!(error_message(&e), "cannot use a.fhec: artifact: truncated");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&plain), "outer: inner");
    }
}
