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
//! - [`Listener`]: [`listen`] in the background, its events in a bounded
//!   queue a consumer pulls from (a slow one is told what it missed).

mod client;
pub mod micro_ota;
mod queue;
mod stream;

pub use crate::device::CallReply;
pub use client::{listen, new_call_id, Caller, RemoteIoOptions};
pub use queue::{Listener, StopHandle};
pub use stream::{OutputEvent, OutputStream};
