//! # uota
//!
//! Deploy MicroPython applications to devices and fleets, over the air and over USB.
//!
//! The crate is layered: [`protocol`] holds the sans-IO wire protocol (bytes in,
//! events out), [`transport`] the byte streams it runs over, [`device`] the
//! high-level client that combines them, and [`manifest`], [`config`] and [`auth`]
//! the pieces a push is built from. [`templates`] renders the MicroPython device
//! runtime and [`sim`] runs it as a virtual device on the MicroPython unix port.
#![deny(missing_docs)]

pub mod app_area;
pub mod auth;
pub mod bundle;
pub mod compat;
pub mod config;
pub mod device;
pub mod error;
pub mod fleet;
pub mod manifest;
pub mod protocol;
pub mod release;
pub mod remoteio;
pub mod repl;
pub mod sim;
pub mod templates;
pub mod text;
pub mod transport;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "python")]
mod python;

pub use device::{BlockingDevice, Device};
pub use error::{DeviceErrorCode, Error, ErrorKind, Result};
pub use manifest::Manifest;
pub use protocol::PushMode;

/// The README's Rust examples, compiled by `cargo test` as doctests (its
/// Python and shell examples run in `tests/python/test_docs_examples.py`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

/// The Rust examples of docs/fleet.md, compiled by `cargo test` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/fleet.md")]
pub struct FleetDocExamples;
