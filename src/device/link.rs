//! Where a device is and how to reach it: WiFi TCP or a serial port.

use std::fmt;

use super::{ConnectOptions, Device};
use crate::error::Result;
use crate::repl::Repl;
use crate::transport::serial::{self, SerialTransport};

/// How to reach a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The OTA server over WiFi TCP.
    Tcp {
        /// Address or hostname.
        host: String,
        /// OTA port.
        port: u16,
    },
    /// The REPL console on a serial port; the OTA protocol runs on it.
    Serial {
        /// Port path (`/dev/ttyUSB0`, `COM3`); `None` auto-detects the one board attached.
        path: Option<String>,
        /// Baud rate (ignored by native USB ports).
        baud: u32,
    },
}

impl Link {
    /// A serial link at the default baud rate.
    pub fn serial(path: Option<String>) -> Self {
        Link::Serial {
            path,
            baud: serial::DEFAULT_BAUD,
        }
    }

    /// Whether `port` names a serial port rather than a TCP port number
    /// (anything that is not all digits: `99999` is a bad port number, not
    /// a serial port).
    pub fn looks_like_serial_port(port: &str) -> bool {
        port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Tcp { host, port } => write!(f, "{host}:{port}"),
            Link::Serial {
                path: Some(p),
                baud,
            } => write!(f, "{p} at {baud} baud"),
            Link::Serial { path: None, baud } => write!(f, "the serial board at {baud} baud"),
        }
    }
}

impl Device {
    /// Connect over `link` and perform the handshake: TCP as
    /// [`Device::connect_tcp`], serial as [`Device::connect_repl`] on the
    /// port (auto-detected when the link names none).
    ///
    /// # Errors
    ///
    /// Those of the two, and [`crate::Error::NoSerialPort`] /
    /// [`crate::Error::AmbiguousSerialPort`] when auto-detection finds no
    /// board or several.
    pub async fn open(link: &Link, opts: ConnectOptions) -> Result<Device> {
        match link {
            Link::Tcp { host, port } => Device::connect_tcp(host, *port, opts).await,
            Link::Serial { path, baud } => {
                let path = match path {
                    Some(p) => p.clone(),
                    None => serial::detect()?.path,
                };
                let io = SerialTransport::open(&path, *baud, opts.connect_timeout).await?;
                Device::connect_repl(Repl::new(io), opts).await
            }
        }
    }
}
