//! Finding serial ports and telling which one is a MicroPython board.
//!
//! Finding is kept apart from talking (see [`super::SerialTransport`]), as in
//! espflash and probe-rs: [`list_ports`] asks the operating system what is
//! attached, [`Bridge::lookup`] recognises the USB-serial chips that boards
//! carry, and [`autodetect`] is a pure function over a list of ports, so the
//! choice is testable without hardware.

use std::fmt;

use crate::error::{Error, Result};

/// A USB device known to carry a MicroPython REPL: a USB-to-UART bridge chip
/// on a development board, or a microcontroller's own (native) USB port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bridge {
    /// USB vendor id.
    pub vid: u16,
    /// USB product id.
    pub pid: u16,
    /// Who makes the chip (`Silicon Labs`, `WCH`, `Espressif` …).
    pub vendor: &'static str,
    /// The chip or interface (`CP210x`, `CH340/CH341`, `USB-Serial-JTAG` …).
    pub chip: &'static str,
    /// `true` when the port is the microcontroller's own USB (ESP32-S2/S3/C3,
    /// RP2040), where the baud rate is ignored and DTR tells the board that a
    /// terminal is attached; `false` for a separate USB-to-UART chip.
    pub native_usb: bool,
}

const fn uart(vid: u16, pid: u16, vendor: &'static str, chip: &'static str) -> Bridge {
    Bridge {
        vid,
        pid,
        vendor,
        chip,
        native_usb: false,
    }
}

const fn native(vid: u16, pid: u16, vendor: &'static str, chip: &'static str) -> Bridge {
    Bridge {
        vid,
        pid,
        vendor,
        chip,
        native_usb: true,
    }
}

/// The USB ids autodetection looks for.
///
/// USB-to-UART chips found on ESP32/ESP8266 and other boards, and the native
/// USB interfaces MicroPython presents on ESP32-S2/S3/C3 and RP2040/RP2350.
pub const KNOWN_BRIDGES: &[Bridge] = &[
    // Silicon Labs.
    uart(0x10c4, 0xea60, "Silicon Labs", "CP210x"),
    uart(0x10c4, 0xea70, "Silicon Labs", "CP2105"),
    uart(0x10c4, 0xea71, "Silicon Labs", "CP2108"),
    // WCH (QinHeng).
    uart(0x1a86, 0x7523, "WCH", "CH340/CH341"),
    uart(0x1a86, 0x7522, "WCH", "CH340"),
    uart(0x1a86, 0x5523, "WCH", "CH341"),
    uart(0x1a86, 0x55d2, "WCH", "CH342"),
    uart(0x1a86, 0x55d3, "WCH", "CH343"),
    uart(0x1a86, 0x55d4, "WCH", "CH9102"),
    // FTDI.
    uart(0x0403, 0x6001, "FTDI", "FT232R"),
    uart(0x0403, 0x6010, "FTDI", "FT2232"),
    uart(0x0403, 0x6011, "FTDI", "FT4232H"),
    uart(0x0403, 0x6014, "FTDI", "FT232H"),
    uart(0x0403, 0x6015, "FTDI", "FT-X (FT230X/FT231X)"),
    // Prolific, common in USB-serial cables for ESP8266 modules.
    uart(0x067b, 0x2303, "Prolific", "PL2303"),
    // Espressif native USB.
    native(
        0x303a,
        0x1001,
        "Espressif",
        "USB-Serial-JTAG (ESP32-S3/C3/C6)",
    ),
    native(0x303a, 0x0002, "Espressif", "ESP32-S2 USB CDC"),
    native(0x303a, 0x4001, "Espressif", "TinyUSB CDC (ESP32-S2/S3)"),
    // Raspberry Pi.
    native(0x2e8a, 0x0005, "Raspberry Pi", "MicroPython RP2040/RP2350"),
    uart(0x2e8a, 0x000c, "Raspberry Pi", "Debug Probe UART"),
];

impl Bridge {
    /// The known bridge with these USB ids, if any.
    pub fn lookup(vid: u16, pid: u16) -> Option<Bridge> {
        KNOWN_BRIDGES
            .iter()
            .find(|b| b.vid == vid && b.pid == pid)
            .copied()
    }
}

impl fmt::Display for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.vendor, self.chip)
    }
}

/// One serial port seen on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortInfo {
    /// What to open: `/dev/ttyUSB0`, `/dev/cu.usbserial-0001`, `COM3`.
    pub path: String,
    /// USB vendor id, for a USB port.
    pub vid: Option<u16>,
    /// USB product id, for a USB port.
    pub pid: Option<u16>,
    /// USB serial number string, when the device has one.
    pub serial_number: Option<String>,
    /// USB manufacturer string.
    pub manufacturer: Option<String>,
    /// USB product string.
    pub product: Option<String>,
    /// The known bridge these USB ids belong to, if any.
    pub bridge: Option<Bridge>,
}

impl PortInfo {
    /// A port with no USB information (a built-in UART, a pseudo-terminal).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// A USB port with these ids; [`PortInfo::bridge`] is filled from [`KNOWN_BRIDGES`].
    pub fn usb(path: impl Into<String>, vid: u16, pid: u16) -> Self {
        Self {
            path: path.into(),
            vid: Some(vid),
            pid: Some(pid),
            bridge: Bridge::lookup(vid, pid),
            ..Self::default()
        }
    }
}

/// `/dev/ttyUSB0 (Silicon Labs CP210x, 10c4:ea60, "CP2102N USB to UART Bridge Controller", serial 0001)`.
impl fmt::Display for PortInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        let mut parts = Vec::new();
        match (&self.bridge, self.vid, self.pid) {
            (Some(b), _, _) => parts.push(format!("{b}, {:04x}:{:04x}", b.vid, b.pid)),
            (None, Some(vid), Some(pid)) => parts.push(format!("USB {vid:04x}:{pid:04x}")),
            _ => {}
        }
        match (&self.manufacturer, &self.product) {
            (Some(m), Some(p)) if !p.contains(m.as_str()) => parts.push(format!("{m:?} {p:?}")),
            (_, Some(p)) => parts.push(format!("{p:?}")),
            (Some(m), None) => parts.push(format!("{m:?}")),
            (None, None) => {}
        }
        if let Some(s) = &self.serial_number {
            parts.push(format!("serial {s}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Pick the one port that looks like a board.
///
/// Exactly one port with a known [`Bridge`] is returned. With none,
/// [`Error::NoSerialPort`] lists every port seen; with several,
/// [`Error::AmbiguousSerialPort`] lists the candidates, and the caller must
/// name one (`--port`). Ports without a known bridge are never chosen: an
/// unknown USB device may be anything (a modem, a UPS, a GPS).
pub fn autodetect(ports: &[PortInfo]) -> Result<PortInfo> {
    let candidates: Vec<&PortInfo> = ports.iter().filter(|p| p.bridge.is_some()).collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::NoSerialPort {
            seen: ports.iter().map(ToString::to_string).collect(),
        }),
        many => Err(Error::AmbiguousSerialPort {
            candidates: many.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// [`autodetect`] over the ports attached now ([`list_ports`]).
pub fn detect() -> Result<PortInfo> {
    let ports = list_ports();
    let chosen = autodetect(&ports)?;
    tracing::debug!(port = %chosen, "serial port autodetected");
    Ok(chosen)
}

/// The serial ports attached to this machine, sorted by path.
///
/// USB ports carry their ids and strings (on Linux read from sysfs, without
/// libudev). Phantom built-in UARTs (Linux `ttyS*` with no hardware behind
/// them) are left out, and on macOS only the `/dev/cu.*` node of each device
/// is listed. A failure to enumerate is logged and gives an empty list: the
/// caller then reports that no port was found.
pub fn list_ports() -> Vec<PortInfo> {
    #[cfg(target_os = "linux")]
    if !std::path::Path::new("/sys/class/tty").is_dir() {
        // serialport panics without sysfs (some containers).
        tracing::debug!("no /sys/class/tty: no serial ports to list");
        return Vec::new();
    }
    let found = match tokio_serial::available_ports() {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "could not enumerate serial ports");
            return Vec::new();
        }
    };
    let ports = found
        .into_iter()
        .map(|p| match p.port_type {
            tokio_serial::SerialPortType::UsbPort(usb) => PortInfo {
                path: p.port_name,
                vid: Some(usb.vid),
                pid: Some(usb.pid),
                serial_number: usb.serial_number,
                manufacturer: usb.manufacturer,
                product: usb.product,
                bridge: Bridge::lookup(usb.vid, usb.pid),
            },
            _ => PortInfo::new(p.port_name),
        })
        .filter(|p| p.vid.is_some() || !is_phantom_uart(&p.path))
        .collect();
    tidy(ports)
}

/// Sort by path and drop a `/dev/tty.X` whose `/dev/cu.X` twin is listed
/// (macOS lists both nodes of one device; `cu` is the one to open).
fn tidy(mut ports: Vec<PortInfo>) -> Vec<PortInfo> {
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    let callouts: std::collections::HashSet<String> = ports
        .iter()
        .filter_map(|p| p.path.strip_prefix("/dev/cu.").map(str::to_owned))
        .collect();
    ports.retain(|p| {
        p.path
            .strip_prefix("/dev/tty.")
            .is_none_or(|rest| !callouts.contains(rest))
    });
    ports
}

/// A Linux `ttyS*` node whose UART type is 0 (`PORT_UNKNOWN`): the kernel
/// made the node but found no hardware.
#[cfg(target_os = "linux")]
fn is_phantom_uart(path: &str) -> bool {
    let Some(name) = path.strip_prefix("/dev/") else {
        return false;
    };
    if !name.starts_with("ttyS") {
        return false;
    }
    std::fs::read_to_string(format!("/sys/class/tty/{name}/type"))
        .map(|t| t.trim() == "0")
        .unwrap_or(false)
}

#[cfg(not(target_os = "linux"))]
fn is_phantom_uart(_path: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn the_bridge_table_knows_the_usual_chips() {
        let chip = |vid, pid| Bridge::lookup(vid, pid).map(|b| b.chip);
        assert_eq!(chip(0x10c4, 0xea60), Some("CP210x"));
        assert_eq!(chip(0x1a86, 0x7523), Some("CH340/CH341"));
        assert_eq!(chip(0x1a86, 0x55d4), Some("CH9102"));
        assert_eq!(chip(0x0403, 0x6001), Some("FT232R"));
        assert_eq!(chip(0x0403, 0x6015), Some("FT-X (FT230X/FT231X)"));
        assert!(chip(0x303a, 0x1001).unwrap().contains("USB-Serial-JTAG"));
        assert!(chip(0x2e8a, 0x0005).unwrap().contains("RP2040"));
        assert!(Bridge::lookup(0x303a, 0x1001).unwrap().native_usb);
        assert!(!Bridge::lookup(0x10c4, 0xea60).unwrap().native_usb);
        // RP2040 BOOTSEL mass storage is not a serial port.
        assert_eq!(Bridge::lookup(0x2e8a, 0x0003), None);
        assert_eq!(Bridge::lookup(0x1234, 0x5678), None);
    }

    #[test]
    fn the_bridge_table_has_no_duplicate_ids() {
        let mut ids: Vec<(u16, u16)> = KNOWN_BRIDGES.iter().map(|b| (b.vid, b.pid)).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before);
    }

    #[test]
    fn one_known_bridge_is_chosen_among_other_ports() {
        let ports = vec![
            PortInfo::new("/dev/ttyS0"),
            PortInfo::usb("/dev/ttyACM0", 0x1234, 0x5678),
            PortInfo::usb("/dev/ttyUSB0", 0x10c4, 0xea60),
        ];
        let chosen = autodetect(&ports).unwrap();
        assert_eq!(chosen.path, "/dev/ttyUSB0");
        assert_eq!(chosen.bridge.unwrap().chip, "CP210x");
    }

    #[test]
    fn no_port_at_all_is_a_clear_error() {
        let err = autodetect(&[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
        match &err {
            Error::NoSerialPort { seen } => assert!(seen.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("no serial port"), "{msg}");
        assert!(msg.contains("--port"), "{msg}");
    }

    #[test]
    fn unknown_ports_only_are_listed_but_not_chosen() {
        let mut gps = PortInfo::usb("/dev/ttyACM3", 0x1546, 0x01a7);
        gps.product = Some("u-blox GNSS receiver".into());
        let ports = vec![PortInfo::new("/dev/ttyS0"), gps];
        let err = autodetect(&ports).unwrap_err();
        let Error::NoSerialPort { seen } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(seen.len(), 2);
        let msg = err.to_string();
        assert!(msg.contains("/dev/ttyS0"), "{msg}");
        assert!(msg.contains("/dev/ttyACM3"), "{msg}");
        assert!(msg.contains("1546:01a7"), "{msg}");
        assert!(msg.contains("u-blox GNSS receiver"), "{msg}");
    }

    #[test]
    fn several_boards_ask_for_a_port() {
        let mut s3 = PortInfo::usb("/dev/ttyACM0", 0x303a, 0x1001);
        s3.serial_number = Some("84:F7:03:A0:F3:80".into());
        let ports = vec![
            s3,
            PortInfo::usb("/dev/ttyUSB0", 0x1a86, 0x7523),
            PortInfo::new("/dev/ttyS0"),
        ];
        let err = autodetect(&ports).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let Error::AmbiguousSerialPort { candidates } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(candidates.len(), 2);
        let msg = err.to_string();
        assert!(msg.contains("--port"), "{msg}");
        assert!(msg.contains("/dev/ttyACM0"), "{msg}");
        assert!(msg.contains("84:F7:03:A0:F3:80"), "{msg}");
        assert!(msg.contains("/dev/ttyUSB0"), "{msg}");
        assert!(msg.contains("CH340"), "{msg}");
        assert!(!msg.contains("/dev/ttyS0"), "{msg}");
    }

    #[test]
    fn a_port_describes_itself() {
        let mut p = PortInfo::usb("/dev/ttyUSB0", 0x10c4, 0xea60);
        p.manufacturer = Some("Silicon Labs".into());
        p.product = Some("CP2102N USB to UART Bridge Controller".into());
        p.serial_number = Some("0001".into());
        assert_eq!(
            p.to_string(),
            "/dev/ttyUSB0 (Silicon Labs CP210x, 10c4:ea60, \"Silicon Labs\" \
             \"CP2102N USB to UART Bridge Controller\", serial 0001)"
        );
        assert_eq!(PortInfo::new("/dev/ttyS0").to_string(), "/dev/ttyS0");
        assert_eq!(
            PortInfo::usb("COM7", 0xabcd, 0x0001).to_string(),
            "COM7 (USB abcd:0001)"
        );
    }

    #[test]
    fn macos_twin_nodes_count_once() {
        let ports = tidy(vec![
            PortInfo::usb("/dev/tty.usbserial-0001", 0x10c4, 0xea60),
            PortInfo::usb("/dev/cu.usbserial-0001", 0x10c4, 0xea60),
            PortInfo::new("/dev/tty.Bluetooth-Incoming-Port"),
        ]);
        let paths: Vec<&str> = ports.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/dev/cu.usbserial-0001", "/dev/tty.Bluetooth-Incoming-Port"]
        );
        assert_eq!(autodetect(&ports).unwrap().path, "/dev/cu.usbserial-0001");
    }

    #[test]
    fn listing_the_ports_of_this_machine_does_not_fail() {
        // Whatever is attached (usually nothing on CI), listing must not panic
        // and every USB port must carry its ids.
        for p in list_ports() {
            assert_eq!(p.vid.is_some(), p.pid.is_some(), "{p:?}");
        }
    }
}
