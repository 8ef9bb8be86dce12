//! The fleet inventory: `config/fleet.json`, the devices a rollout reaches.
//!
//! ```json
//! {"devices": [
//!   {"name": "hall-1", "host": "10.0.4.21", "port": 2018, "tags": ["canary"], "id": "a4cf12"},
//!   {"name": "bench", "serial": "/dev/ttyUSB0", "baud": 115200}
//! ]}
//! ```
//!
//! An entry's `id`, when given, is the id the device must report in its
//! hello: addresses move (DHCP), and per-device keys are derived from the id,
//! so a device that answers at the address with another id is refused for
//! that entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::transport::link::{Link, DEFAULT_OTA_PORT};

use super::discover::Discovered;

/// Where the inventory lives in a project.
pub const INVENTORY_FILE: &str = "config/fleet.json";

/// One device of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetDevice {
    /// A name unique within the inventory (reports and `--select` use it).
    pub name: String,
    /// The device's address on the network (with `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The OTA port (default 2018).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A serial port instead of an address (`/dev/ttyUSB0`, `COM3`, or
    /// `auto` for the one board attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The serial baud rate (default 115200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
    /// Labels to select devices by (`--select tag:canary`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The id the device must report at this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl FleetDevice {
    /// A device reached over TCP.
    pub fn tcp(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            host: Some(host.into()),
            port: Some(port),
            serial: None,
            baud: None,
            tags: Vec::new(),
            id: None,
        }
    }

    /// How to reach the device.
    pub fn link(&self) -> Link {
        match (&self.host, &self.serial) {
            (_, Some(path)) => Link::Serial {
                path: (path != "auto").then(|| path.clone()),
                baud: self.baud.unwrap_or(115_200),
            },
            (Some(host), None) => Link::tcp(host.clone(), self.port.unwrap_or(DEFAULT_OTA_PORT)),
            // `Inventory::validate` refuses an entry with neither.
            (None, None) => Link::tcp(String::new(), DEFAULT_OTA_PORT),
        }
    }

    /// The address for people: `host:port` or the serial port.
    pub fn address(&self) -> String {
        match (&self.host, &self.serial) {
            (_, Some(path)) => path.clone(),
            (Some(host), None) => format!("{host}:{}", self.port.unwrap_or(DEFAULT_OTA_PORT)),
            (None, None) => String::new(),
        }
    }

    /// Check the entry alone: a name, exactly one of `host` and `serial`,
    /// no `port` with `serial`, no port 0, no empty or comma-holding tag, no
    /// empty `id`.
    ///
    /// # Errors
    ///
    /// A message naming the problem.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a device without a name".into());
        }
        match (&self.host, &self.serial) {
            (Some(_), Some(_)) => Err(format!(
                "device {:?} has both \"host\" and \"serial\": give one",
                self.name
            )),
            (None, None) => Err(format!(
                "device {:?} has neither \"host\" nor \"serial\"",
                self.name
            )),
            (Some(h), None) if h.trim().is_empty() => {
                Err(format!("device {:?} has an empty \"host\"", self.name))
            }
            (None, Some(_)) if self.port.is_some() => Err(format!(
                "device {:?}: \"port\" goes with \"host\" (a serial device has \"serial\" and \"baud\")",
                self.name
            )),
            _ if self.port == Some(0) => Err(format!("device {:?}: port 0", self.name)),
            _ if self.tags.iter().any(|t| t.trim().is_empty() || t.contains(',')) => Err(format!(
                "device {:?}: a tag is empty or holds a comma",
                self.name
            )),
            _ if self.id.as_deref().is_some_and(|i| i.trim().is_empty()) => {
                Err(format!("device {:?}: an empty \"id\"", self.name))
            }
            _ => Ok(()),
        }
    }
}

/// The devices of a fleet, as `config/fleet.json` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The devices, in the order rollouts take them (canaries first).
    pub devices: Vec<FleetDevice>,
}

/// What [`Inventory::merge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeSummary {
    /// Devices added as new entries.
    pub added: Vec<String>,
    /// Entries whose address or id was updated.
    pub updated: Vec<String>,
    /// Entries left alone because the device at their address reports
    /// another id than they expect.
    pub conflicts: Vec<String>,
}

impl Inventory {
    /// The inventory of the project in `root` (`config/fleet.json`).
    pub fn path_in(root: &Path) -> PathBuf {
        root.join(INVENTORY_FILE)
    }

    /// An inventory of `devices`, checked as [`Inventory::load`] checks a
    /// file's entries.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the first problem.
    pub fn new(devices: Vec<FleetDevice>) -> Result<Inventory> {
        let inv = Inventory { devices };
        inv.validate().map_err(Error::InvalidArgument)?;
        Ok(inv)
    }

    /// The devices of the inventory file at `path`, which must list one at
    /// least (a fleet command of no device is a mistake).
    ///
    /// # Errors
    ///
    /// Those of [`Inventory::load`], and [`Error::Config`] when it lists no
    /// device.
    pub fn load_devices(path: &Path) -> Result<Vec<FleetDevice>> {
        let inv = Self::load(path)?;
        if inv.devices.is_empty() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "the inventory lists no device".into(),
            });
        }
        Ok(inv.devices)
    }

    /// Read and check an inventory file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when it is missing, is not valid JSON, has unknown
    /// keys, or an entry is incomplete or duplicated.
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: "no fleet inventory: create it (`uota list --scan CIDR --save` writes one) or name the devices with --scan".into(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::parse(&text, path)
    }

    /// Parse and check the text of an inventory (`path` is for messages).
    ///
    /// # Errors
    ///
    /// As [`Inventory::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Inventory> {
        let inv: Inventory = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("not a fleet inventory ({e}); expected {{\"devices\": [{{\"name\", \"host\", \"port\", \"tags\", \"id\"}}, …]}}"),
        })?;
        inv.validate().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(inv)
    }

    /// Check every entry: a name, exactly one of `host` and `serial`, names
    /// and addresses not repeated.
    ///
    /// # Errors
    ///
    /// A message naming the first problem.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut names = std::collections::HashSet::new();
        let mut addresses = std::collections::HashSet::new();
        for d in &self.devices {
            d.check()?;
            if !names.insert(d.name.as_str()) {
                return Err(format!("two devices are named {:?}", d.name));
            }
            if !addresses.insert(d.address()) {
                return Err(format!(
                    "two devices are at {} ({:?} is the second)",
                    d.address(),
                    d.name
                ));
            }
        }
        Ok(())
    }

    /// Write the inventory (a temporary file renamed over it).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("an inventory serializes");
        text.push(b'\n');
        crate::config::write_atomic(path, &text, false)
    }

    /// Add what a scan found: a device whose id an entry expects updates that
    /// entry's address (it moved); one at an entry's address without an
    /// expected id gives the entry its id; any other becomes a new entry
    /// named after its id. An entry expecting another id than the device at
    /// its address reports is left alone and listed in `conflicts`.
    pub fn merge(&mut self, found: &[Discovered]) -> MergeSummary {
        let mut summary = MergeSummary::default();
        for dev in found {
            let id = dev.id.clone().filter(|i| !i.is_empty());
            let at = |d: &FleetDevice| {
                d.serial.is_none()
                    && d.host.as_deref() == Some(dev.host.as_str())
                    && d.port.unwrap_or(DEFAULT_OTA_PORT) == dev.port
            };
            if let Some(entry) = id
                .as_ref()
                .and_then(|id| self.devices.iter_mut().find(|d| d.id.as_ref() == Some(id)))
            {
                if !at(entry) {
                    entry.host = Some(dev.host.clone());
                    entry.port = Some(dev.port);
                    entry.serial = None;
                    summary.updated.push(entry.name.clone());
                }
                continue;
            }
            if let Some(entry) = self.devices.iter_mut().find(|d| at(d)) {
                match (&entry.id, &id) {
                    (None, Some(id)) => {
                        entry.id = Some(id.clone());
                        summary.updated.push(entry.name.clone());
                    }
                    (Some(expected), Some(id)) if expected != id => {
                        summary.conflicts.push(entry.name.clone());
                    }
                    _ => {}
                }
                continue;
            }
            let base = match &id {
                Some(id) => format!("dev-{id}"),
                None => format!("dev-{}-{}", dev.host, dev.port),
            };
            let mut name = base.clone();
            let mut n = 2;
            while self.devices.iter().any(|d| d.name == name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            let mut entry = FleetDevice::tcp(name.clone(), dev.host.clone(), dev.port);
            entry.id = id;
            self.devices.push(entry);
            summary.added.push(name);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Inventory, String> {
        Inventory::parse(text, Path::new("config/fleet.json")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_tcp_and_serial_entries() {
        let inv = parse(
            r#"{"devices": [
                {"name": "a", "host": "127.0.0.1", "port": 2020, "tags": ["canary"], "id": "x1"},
                {"name": "b", "serial": "/dev/ttyUSB0"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(inv.devices[0].link(), Link::tcp("127.0.0.1", 2020));
        assert_eq!(inv.devices[0].address(), "127.0.0.1:2020");
        assert_eq!(
            inv.devices[1].link(),
            Link::Serial {
                path: Some("/dev/ttyUSB0".into()),
                baud: 115_200
            }
        );
    }

    #[test]
    fn refuses_malformed_inventories_with_the_reason() {
        for (text, says) in [
            ("{", "not a fleet inventory"),
            (r#"{"devices": [{"name": "a"}]}"#, "neither"),
            (
                r#"{"devices": [{"name": "a", "host": "h", "serial": "/dev/x"}]}"#,
                "both",
            ),
            (
                r#"{"devices": [{"name": "a", "hots": "h"}]}"#,
                "unknown field",
            ),
            (
                r#"{"devices": [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}]}"#,
                "two devices are named",
            ),
            (
                r#"{"devices": [{"name": "a", "host": "h"}, {"name": "b", "host": "h", "port": 2018}]}"#,
                "two devices are at h:2018",
            ),
            (
                r#"{"devices": [{"name": " ", "host": "h"}]}"#,
                "without a name",
            ),
            (
                r#"{"devices": [{"name": "a", "host": "h", "tags": [""]}]}"#,
                "tag",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_missing_inventory_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Inventory::load(&dir.path().join("config/fleet.json")).unwrap_err();
        assert!(err.to_string().contains("--save"), "{err}");
    }

    fn found(host: &str, port: u16, id: &str) -> Discovered {
        Discovered {
            host: host.into(),
            port,
            id: Some(id.into()),
            ..Discovered::default()
        }
    }

    #[test]
    fn merge_adds_moves_and_reports_conflicts() {
        let mut inv = parse(
            r#"{"devices": [
                {"name": "moved", "host": "127.0.0.1", "port": 1, "id": "m"},
                {"name": "known", "host": "127.0.0.2", "port": 2},
                {"name": "other", "host": "127.0.0.3", "port": 3, "id": "o"}
            ]}"#,
        )
        .unwrap();
        let s = inv.merge(&[
            found("127.0.0.9", 9, "m"),
            found("127.0.0.2", 2, "k"),
            found("127.0.0.3", 3, "intruder"),
            found("127.0.0.4", 4, "new"),
        ]);
        assert_eq!(s.updated, ["moved", "known"]);
        assert_eq!(s.conflicts, ["other"]);
        assert_eq!(s.added, ["dev-new"]);
        assert_eq!(inv.devices[0].address(), "127.0.0.9:9");
        assert_eq!(inv.devices[1].id.as_deref(), Some("k"));
        assert_eq!(inv.devices[2].id.as_deref(), Some("o"));
        assert_eq!(inv.devices[3].address(), "127.0.0.4:4");
        inv.validate().unwrap();
        // Merging the same scan again changes nothing.
        let again = inv.merge(&[found("127.0.0.9", 9, "m"), found("127.0.0.4", 4, "new")]);
        assert_eq!(again, MergeSummary::default());
    }
}
