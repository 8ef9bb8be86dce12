//! Byte streams the protocol runs over.
//!
//! A transport only moves bytes; it never parses commands. Each one implements
//! [`Transport`], so the [`crate::device::Device`] client works over any of them.

pub mod credit;
pub mod link;
#[cfg(unix)]
pub mod prefixed;
pub mod pty;
pub mod serial;
pub mod tcp;

use tokio::io::{AsyncRead, AsyncWrite};

/// An async, bidirectional byte stream to one device.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// A human-readable name of the peer (`127.0.0.5:2018`, `/dev/ttyUSB0`).
    fn peer(&self) -> String;

    /// Make the coming close discard whatever is still queued for the peer
    /// (TCP: an RST instead of a FIN after the queued bytes). Used when a
    /// push is cancelled, so that a request already queued (a commit, say)
    /// never reaches the device. The default does nothing.
    fn abort(&mut self) {}

    /// From now on move bytes as they are: a layer that only served the
    /// session that just ended (the credit of an OTA session on a serial
    /// console) steps aside, e.g. before the console goes back to the REPL.
    /// The default does nothing.
    fn passthrough(&mut self) {}
}

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

impl Transport for BoxTransport {
    fn peer(&self) -> String {
        (**self).peer()
    }

    fn abort(&mut self) {
        (**self).abort()
    }

    fn passthrough(&mut self) {
        (**self).passthrough()
    }
}
