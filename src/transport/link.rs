//! Where a device is, as one value: `tcp://host:2018`,
//! `serial:///dev/ttyUSB0?baud=115200`, `serial://auto`.
//!
//! A [`Link`] is parsed from such a string ([`FromStr`]) or built from its
//! parts, printed back in the same form ([`fmt::Display`]), and opened
//! ([`Link::open`]) into a transport together with the link's
//! [`Capabilities`]: whether the link itself keeps the device from being
//! overrun, and how much it carries in one write. Transfer settings are
//! chosen from those capabilities, never guessed from a port's name again.
//!
//! Finding a serial board ([`super::serial::detect`]) is kept apart from
//! talking to it: `serial://auto` is resolved to one port path by
//! [`Link::resolve`] before anything is opened.
//!
//! ```
//! use uota::transport::link::Link;
//!
//! let link: Link = "tcp://127.0.0.1:2018".parse().unwrap();
//! assert_eq!(link, Link::Tcp { host: "127.0.0.1".into(), port: 2018 });
//! let usb: Link = "serial:///dev/ttyUSB0?baud=921600".parse().unwrap();
//! assert_eq!(usb.to_string(), "serial:///dev/ttyUSB0?baud=921600");
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::serial::{self, SerialTransport};
use super::tcp::TcpTransport;
use super::BoxTransport;
use crate::error::{Error, Result};

/// The OTA server's TCP port when a link or a project names none.
pub const DEFAULT_OTA_PORT: u16 = 2018;

/// How to reach a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// What a link guarantees, so that transfer settings can follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The link itself stops the host before the device's receive buffer
    /// overflows (TCP, native USB, a pseudo-terminal). Without it bytes are
    /// paced by the device's credits, as a UART needs.
    pub flow_control: bool,
    /// The most bytes one write carries whole, when the link has such a limit
    /// (a BLE characteristic, say); `None` for byte streams.
    pub mtu: Option<usize>,
}

impl Capabilities {
    /// A byte stream with flow control and no size limit per write (TCP).
    pub const STREAM: Capabilities = Capabilities {
        flow_control: true,
        mtu: None,
    };

    /// A UART: no flow control, so the host waits for the device's credits.
    pub const UART: Capabilities = Capabilities {
        flow_control: false,
        mtu: None,
    };

    /// Whether the host must pace bytes to what the device says it can take.
    pub fn uart_paced(&self) -> bool {
        !self.flow_control
    }
}

/// A link opened: the byte stream and what it guarantees.
pub struct OpenLink {
    /// The transport, ready for the protocol.
    pub io: BoxTransport,
    /// What the link guarantees.
    pub capabilities: Capabilities,
    /// The link as opened (`serial://auto` resolved to the port found).
    pub link: Link,
}

impl Link {
    /// A TCP link.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Link::Tcp {
            host: host.into(),
            port,
        }
    }

    /// A serial link at the default baud rate; `None` auto-detects the port.
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

    /// Whether this is a serial console link.
    pub fn is_serial(&self) -> bool {
        matches!(self, Link::Serial { .. })
    }

    /// The same link with `serial://auto` replaced by the one board attached.
    ///
    /// # Errors
    ///
    /// [`Error::NoSerialPort`] / [`Error::AmbiguousSerialPort`] when
    /// detection finds no board or several.
    pub fn resolve(&self) -> Result<Link> {
        match self {
            Link::Serial { path: None, baud } => Ok(Link::Serial {
                path: Some(serial::detect()?.path),
                baud: *baud,
            }),
            other => Ok(other.clone()),
        }
    }

    /// What this link guarantees. A serial port has flow control when it is
    /// a native USB console or a pseudo-terminal; a USB-to-UART bridge (or a
    /// port not found among the attached ones) is UART-paced. Auto-detected
    /// ports are judged once resolved ([`Link::resolve`]).
    pub fn capabilities(&self) -> Capabilities {
        match self {
            Link::Tcp { .. } => Capabilities::STREAM,
            Link::Serial { path: Some(p), .. } => serial_capabilities(p),
            Link::Serial { path: None, .. } => Capabilities::UART,
        }
    }

    /// Open the link: a TCP connection (one attempt, within `timeout`) or
    /// the serial port (auto-detected first for `serial://auto`).
    ///
    /// # Errors
    ///
    /// Transport errors, [`Error::Timeout`], and those of [`Link::resolve`].
    pub async fn open(&self, timeout: Duration) -> Result<OpenLink> {
        let link = self.resolve()?;
        let io: BoxTransport = match &link {
            Link::Tcp { host, port } => {
                Box::new(TcpTransport::connect(host, *port, timeout).await?)
            }
            Link::Serial { path, baud } => {
                let path = path.as_deref().unwrap_or_default();
                Box::new(SerialTransport::open(path, *baud, timeout).await?)
            }
        };
        Ok(OpenLink {
            io,
            capabilities: link.capabilities(),
            link,
        })
    }
}

/// Whether the serial port at `path` cannot overrun a board: a
/// pseudo-terminal, or a native USB console among the attached ports.
pub(crate) fn serial_capabilities(path: &str) -> Capabilities {
    let native = path.starts_with("/dev/pts/")
        || serial::list_ports()
            .into_iter()
            .find(|p| p.path == path)
            .and_then(|p| p.bridge)
            .is_some_and(|b| b.native_usb);
    if native {
        Capabilities::STREAM
    } else {
        Capabilities::UART
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Link::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Link::Serial { path, baud } => {
                let path = path.as_deref().unwrap_or("auto");
                write!(f, "serial://{path}?baud={baud}")
            }
        }
    }
}

/// The forms a link string takes, for error messages.
const LINK_FORMS: &str =
    "tcp://HOST[:PORT], serial:///dev/ttyUSB0[?baud=N], serial://COM3[?baud=N] or serial://auto";

fn bad_link(text: &str, why: &str) -> Error {
    Error::InvalidArgument(format!(
        "link {text:?}: {why} (links look like {LINK_FORMS})"
    ))
}

impl FromStr for Link {
    type Err = Error;

    fn from_str(text: &str) -> Result<Link> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad_link(text, "no scheme"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => parse_tcp(text, rest),
            "serial" => parse_serial(text, rest),
            "ble" | "http" | "https" => Err(bad_link(
                text,
                &format!("{scheme} links are not supported by this version"),
            )),
            _ => Err(bad_link(text, &format!("unknown scheme {scheme:?}"))),
        }
    }
}

fn parse_tcp(text: &str, rest: &str) -> Result<Link> {
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad_link(text, "a TCP link is only a host and a port"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        // [v6 address]:port
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(bad_link(text, "an IPv6 address in [ ] is not closed"));
        };
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad_link(text, "expected :PORT after the address")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => {
                return Err(bad_link(text, "write an IPv6 address in brackets: [::1]"));
            }
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad_link(text, "no host"));
    }
    let port = match port {
        None => DEFAULT_OTA_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad_link(text, "the port is a number from 1 to 65535")),
        },
    };
    Ok(Link::tcp(host, port))
}

fn parse_serial(text: &str, rest: &str) -> Result<Link> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut baud = serial::DEFAULT_BAUD;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("baud", n)) => {
                baud = match n.parse::<u32>() {
                    Ok(b) if b > 0 => b,
                    _ => return Err(bad_link(text, "baud is a positive number")),
                }
            }
            _ => return Err(bad_link(text, &format!("unknown option {pair:?}"))),
        }
    }
    let path = match path {
        "" => return Err(bad_link(text, "no port: name one, or write serial://auto")),
        "auto" => None,
        p => Some(p.to_string()),
    };
    Ok(Link::Serial { path, baud })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Link {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn tcp_links_parse_with_and_without_a_port() {
        assert_eq!(parse("tcp://127.0.0.1:2018"), Link::tcp("127.0.0.1", 2018));
        assert_eq!(parse("tcp://board.local"), Link::tcp("board.local", 2018));
        assert_eq!(parse("TCP://board.local:9/"), Link::tcp("board.local", 9));
        assert_eq!(parse("tcp://[::1]:2100"), Link::tcp("::1", 2100));
        assert_eq!(parse("tcp://[::1]"), Link::tcp("::1", 2018));
    }

    #[test]
    fn serial_links_parse_paths_auto_and_baud() {
        assert_eq!(
            parse("serial:///dev/ttyUSB0?baud=921600"),
            Link::Serial {
                path: Some("/dev/ttyUSB0".into()),
                baud: 921_600
            }
        );
        assert_eq!(parse("serial://COM3"), Link::serial(Some("COM3".into())));
        assert_eq!(parse("serial://auto"), Link::serial(None));
    }

    #[test]
    fn links_print_as_they_parse() {
        for text in [
            "tcp://127.0.0.1:2018",
            "tcp://[::1]:2100",
            "serial:///dev/ttyACM0?baud=115200",
            "serial://auto?baud=57600",
        ] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(parse(&parse(text).to_string()), parse(text));
        }
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        for (text, why) in [
            ("127.0.0.1:2018", "no scheme"),
            ("tcp://", "no host"),
            ("tcp://h:0", "1 to 65535"),
            ("tcp://h:99999", "1 to 65535"),
            ("tcp://::1", "brackets"),
            ("tcp://h/x", "only a host and a port"),
            ("serial://", "no port"),
            ("serial://auto?baud=0", "positive"),
            ("serial://auto?parity=odd", "unknown option"),
            ("ble://board", "not supported"),
            ("ftp://x", "unknown scheme"),
        ] {
            let err = text.parse::<Link>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("tcp://HOST"), "{text}: {err}");
        }
    }

    #[test]
    fn capabilities_follow_the_link() {
        assert!(Link::tcp("127.0.0.1", 1).capabilities().flow_control);
        assert!(
            Link::serial(Some("/dev/pts/7".into()))
                .capabilities()
                .flow_control
        );
        assert!(Link::serial(Some("/dev/ttyS99".into()))
            .capabilities()
            .uart_paced());
        assert!(Link::serial(None).capabilities().uart_paced());
    }
}
