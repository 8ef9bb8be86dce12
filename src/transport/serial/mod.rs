//! USB serial: the REPL of a board on a USB-to-UART bridge or native USB port.
//!
//! [`discover`] finds ports and recognises boards ([`list_ports`],
//! [`autodetect`]); [`SerialTransport`] talks to one. The two are kept apart
//! so that choosing a port is a pure function, testable without hardware.
//!
//! ```no_run
//! # async fn demo() -> uota::Result<()> {
//! use std::time::Duration;
//! use uota::transport::serial::{self, SerialTransport};
//!
//! let port = serial::detect()?; // the one board attached, or an error listing what was seen
//! let link = SerialTransport::open(&port.path, serial::DEFAULT_BAUD, Duration::from_secs(5)).await?;
//! # drop(link);
//! # Ok(())
//! # }
//! ```
//!
//! Built on `tokio-serial` (which wraps the `serialport` crate) without
//! libudev: on Linux, ports and their USB ids are read from sysfs.

pub mod discover;
mod port;

pub use discover::{autodetect, detect, list_ports, Bridge, PortInfo, KNOWN_BRIDGES};
pub use port::SerialTransport;

/// The baud rate MicroPython's REPL uses on a UART.
pub const DEFAULT_BAUD: u32 = 115_200;
