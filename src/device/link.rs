//! Choosing a device's [`Link`] from what the caller said and the project's
//! config, and opening a [`Device`] on it.

use std::time::Duration;

use tokio::time::Instant;

use super::{ConnectOptions, Device};
use crate::config::ProjectConfig;
use crate::error::{Error, Result};
use crate::repl::Repl;
use crate::transport::link::{Capabilities, OpenLink, DEFAULT_OTA_PORT};
use crate::transport::serial;

pub use crate::transport::link::Link;

/// Which kind of link the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkKind {
    /// Serial when the port names a serial port, else TCP.
    #[default]
    Auto,
    /// WiFi TCP.
    Tcp,
    /// A serial console.
    Serial,
}

/// What a caller said about where a device is (command-line flags, say);
/// whatever it leaves out comes from the project's config
/// ([`LinkChoice::resolve`]).
#[derive(Debug, Clone, Default)]
pub struct LinkChoice {
    /// A whole link (`tcp://…`, `serial://…`); then nothing else may be given.
    pub link: Option<Link>,
    /// The kind of link.
    pub kind: LinkKind,
    /// Device address.
    pub host: Option<String>,
    /// OTA port number, or a serial port path.
    pub port: Option<String>,
    /// Serial baud rate.
    pub baud: Option<u32>,
}

impl LinkChoice {
    /// The link this choice names, completed from `config` (the project's
    /// `hostname`, `port`, `serialPort`, `serialBaud`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a choice that contradicts itself (a
    /// link and separate parts, a port number for a serial link, a serial
    /// port for a TCP one) or names no device at all.
    pub fn resolve(&self, config: Option<&ProjectConfig>) -> Result<Link> {
        if let Some(link) = &self.link {
            if self.kind != LinkKind::Auto
                || self.host.is_some()
                || self.port.is_some()
                || self.baud.is_some()
            {
                return Err(Error::InvalidArgument(format!(
                    "--link {link} already says where the device is: leave out --host, --port, --baud and --transport"
                )));
            }
            return Ok(link.clone());
        }
        let port_is_path = self
            .port
            .as_deref()
            .is_some_and(Link::looks_like_serial_port);
        let serial = match self.kind {
            LinkKind::Serial => true,
            LinkKind::Tcp => false,
            LinkKind::Auto => port_is_path,
        };
        if serial {
            let path = match &self.port {
                Some(p) if port_is_path => Some(p.clone()),
                Some(p) => {
                    return Err(Error::InvalidArgument(format!(
                        "--port {p} is a TCP port number; name a serial port (/dev/ttyUSB0, COM3) or leave it out to auto-detect"
                    )))
                }
                None => config
                    .and_then(|c| c.serial_port.clone())
                    .filter(|p| !p.is_empty()),
            };
            let baud = self
                .baud
                .or(config.and_then(|c| c.serial_baud))
                .unwrap_or(serial::DEFAULT_BAUD);
            return Ok(Link::Serial { path, baud });
        }
        if port_is_path {
            return Err(Error::InvalidArgument(
                "--port names a serial port but --transport is tcp".into(),
            ));
        }
        let host = match (&self.host, config) {
            (Some(h), _) => h.clone(),
            (None, Some(c)) if !c.hostname.is_empty() => c.hostname.clone(),
            _ => {
                return Err(Error::InvalidArgument(
                    "no device address: pass --host (or --port with a serial port, or --link), or set hostname in config/ota.json".into(),
                ))
            }
        };
        let port = match &self.port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "--port {p}: a TCP port is a number from 1 to 65535 (or name a serial port, /dev/ttyUSB0, COM3)"
                    )))
                }
            },
            None => config.map(|c| c.port).unwrap_or(DEFAULT_OTA_PORT),
        };
        Ok(Link::Tcp { host, port })
    }
}

impl Device {
    /// Open `link` and perform the handshake. Over TCP, while the device
    /// refuses connections (it is restarting) this keeps trying for
    /// [`ConnectOptions::connect_retry`]; over a serial console the running
    /// program is interrupted and the session started as
    /// [`Device::connect_repl`] does (the port auto-detected for
    /// `serial://auto`).
    ///
    /// # Errors
    ///
    /// Transport, timeout and handshake errors, and
    /// [`crate::Error::NoSerialPort`] / [`crate::Error::AmbiguousSerialPort`]
    /// when auto-detection finds no board or several.
    pub async fn open(link: &Link, opts: ConnectOptions) -> Result<Device> {
        let give_up = Instant::now() + opts.connect_retry;
        let opened = loop {
            match link.open(opts.connect_timeout).await {
                Err(Error::Transport { source, .. })
                    if !link.is_serial()
                        && source.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < give_up =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let OpenLink {
            io,
            capabilities,
            link,
        } = opened;
        let mut dev = if link.is_serial() {
            Device::connect_console(Repl::new(io), opts, capabilities).await?
        } else {
            Device::handshake(io, opts).await?
        };
        dev.capabilities = capabilities;
        dev.link = Some(link);
        Ok(dev)
    }

    /// Connect over WiFi TCP to `host:port`: [`Device::open`] on a TCP link.
    pub async fn connect_tcp(host: &str, port: u16, opts: ConnectOptions) -> Result<Device> {
        Device::open(&Link::tcp(host, port), opts).await
    }

    /// Where this device was reached, when it was opened from a [`Link`].
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// What the link to this device guarantees.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProjectConfig {
        let mut c: ProjectConfig = serde_json::from_str("{}").unwrap();
        c.hostname = "board.local".into();
        c.port = 2100;
        c
    }

    #[test]
    fn the_project_fills_in_what_the_caller_left_out() {
        let none = LinkChoice::default();
        assert_eq!(
            none.resolve(Some(&config())).unwrap(),
            Link::tcp("board.local", 2100)
        );
        let host = LinkChoice {
            host: Some("127.0.0.9".into()),
            ..LinkChoice::default()
        };
        assert_eq!(
            host.resolve(Some(&config())).unwrap(),
            Link::tcp("127.0.0.9", 2100)
        );
        let serial = LinkChoice {
            kind: LinkKind::Serial,
            ..LinkChoice::default()
        };
        let mut cfg = config();
        cfg.serial_port = Some("/dev/ttyACM3".into());
        cfg.serial_baud = Some(57_600);
        assert_eq!(
            serial.resolve(Some(&cfg)).unwrap().to_string(),
            "serial:///dev/ttyACM3?baud=57600"
        );
    }

    #[test]
    fn a_port_path_means_serial_and_a_number_means_tcp() {
        let path = LinkChoice {
            port: Some("/dev/ttyUSB1".into()),
            ..LinkChoice::default()
        };
        assert!(path.resolve(None).unwrap().is_serial());
        let number = LinkChoice {
            host: Some("127.0.0.1".into()),
            port: Some("99999".into()),
            ..LinkChoice::default()
        };
        let err = number.resolve(None).unwrap_err().to_string();
        assert!(err.contains("1 to 65535"), "{err}");
    }

    #[test]
    fn a_whole_link_excludes_the_parts() {
        let both = LinkChoice {
            link: Some("tcp://127.0.0.1".parse().unwrap()),
            host: Some("127.0.0.2".into()),
            ..LinkChoice::default()
        };
        let err = both.resolve(None).unwrap_err().to_string();
        assert!(err.contains("leave out"), "{err}");
        let only = LinkChoice {
            link: Some("serial://auto".parse().unwrap()),
            ..LinkChoice::default()
        };
        assert_eq!(only.resolve(Some(&config())).unwrap(), Link::serial(None));
    }

    #[test]
    fn no_address_anywhere_is_a_clear_error() {
        let err = LinkChoice::default().resolve(None).unwrap_err().to_string();
        assert!(err.contains("no device address"), "{err}");
    }
}
