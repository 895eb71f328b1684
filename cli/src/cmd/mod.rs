//! One module per command (or family of commands): each holds the command's arguments and a
//! `run` that reads the user's files, calls the libraries and prints.

pub mod build;
#[cfg(feature = "fhe")]
pub mod crypto;
#[cfg(feature = "fhe")]
pub mod demo;
pub mod eval;
pub mod inspect;
#[cfg(feature = "fhe")]
pub mod remote;
#[cfg(feature = "fhe")]
pub mod serve;
pub mod transform;
