//! Byte streams the protocol runs over.
//!
//! A transport only moves bytes; it never parses commands. Each one implements
//! [`Transport`], so the [`crate::device::Device`] client works over any of them.

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
}

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

impl Transport for BoxTransport {
    fn peer(&self) -> String {
        (**self).peer()
    }
}
