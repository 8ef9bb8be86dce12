//! RemoteIO: the device's output streamed to listeners, and calls to
//! handlers its app registered (`@remoteio.on("name")`), over the OTA
//! protocol's authenticated sessions (docs/remoteio.md).
//!
//! - [`OutputStream`] (sans-IO): the listener's position in the output,
//!   duplicates dropped, gaps and restarts reported, outages detected.
//! - [`listen`]: streams the output across link drops, reconnecting with
//!   backoff and resuming where it left off.
//! - [`Caller`]: calls that survive link drops: resent with their id, run
//!   once by the device; a device that runs micro-ota's runtime is called
//!   through its own RemoteIO ([`micro_ota`]).

mod client;
pub mod micro_ota;
mod stream;

pub use crate::device::CallReply;
pub use client::{listen, new_call_id, Caller, RemoteIoOptions};
pub use stream::{OutputEvent, OutputStream};
