//! Finding devices: a concurrent connect-scan of an address range that reads
//! each answering device's hello (no password needed).
//!
//! The scan only connects to the OTA port and says hello; it never
//! authenticates. Ranges larger than a /16 are refused unless forced, and a
//! scan can be held to loopback addresses ([`ScanOptions::loopback_only`],
//! `UOTA_LOOPBACK_ONLY` for the CLI and Python's `Fleet.scan`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::device::{Device, Peer};
use crate::error::{Error, Result};
use crate::transport::link::{Link, DEFAULT_OTA_PORT};

/// The environment variable that holds scans to loopback addresses
/// ([`ScanOptions::loopback_only_from_env`]).
pub const LOOPBACK_ONLY_VAR: &str = "UOTA_LOOPBACK_ONLY";

/// The largest range scanned without [`ScanOptions::force`]: a /16.
pub const MAX_SCAN_ADDRESSES: u64 = 1 << 16;

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The OTA port probed at each address.
    pub port: u16,
    /// Time allowed per address (connect and hello).
    pub timeout: Duration,
    /// Addresses probed at once.
    pub concurrency: usize,
    /// Scan a range larger than a /16.
    pub force: bool,
    /// Refuse any address outside 127.0.0.0/8 and ::1 (tests, CI).
    pub loopback_only: bool,
}

impl ScanOptions {
    /// Whether the environment holds scans to loopback (tests, CI):
    /// [`LOOPBACK_ONLY_VAR`] is set, and neither empty nor `0`.
    pub fn loopback_only_from_env() -> bool {
        std::env::var(LOOPBACK_ONLY_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            port: DEFAULT_OTA_PORT,
            timeout: Duration::from_secs(1),
            concurrency: 256,
            force: false,
            loopback_only: false,
        }
    }
}

/// A device that answered a scan or a probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    /// Its address.
    pub host: String,
    /// Its OTA port.
    pub port: u16,
    /// `uota`, or `micro-ota` for a device running micro-ota's runtime.
    pub protocol: String,
    /// Its id (uota devices).
    pub id: Option<String>,
    /// The uota runtime's version.
    pub runtime: Option<String>,
    /// The active release's version (runtimes that say it in the hello).
    pub version: Option<String>,
    /// The highest release number it has accepted.
    pub release: Option<u64>,
    /// `confirmed` or `pending`.
    pub state: Option<String>,
    /// Whether it requires a password or key for everything.
    pub auth: bool,
}

impl Discovered {
    fn from_peer(host: String, port: u16, peer: &Peer) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match peer {
            Peer::Uota(h) => Discovered {
                host,
                port,
                protocol: "uota".into(),
                id: non_empty(&h.id),
                runtime: non_empty(&h.runtime),
                version: non_empty(&h.version),
                release: Some(h.release),
                state: non_empty(&h.state),
                auth: h.auth,
            },
            Peer::MicroOta => Discovered {
                host,
                port,
                protocol: "micro-ota".into(),
                ..Discovered::default()
            },
        }
    }
}

/// The addresses of `cidr`: `a.b.c.d/n`, a single address, or `::1`. For
/// IPv4 prefixes of /30 and shorter, the network and broadcast addresses are
/// left out.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a malformed range, an IPv6 range other than
/// `::1`, one larger than a /16 without `opts.force`, or one outside
/// loopback with `opts.loopback_only` (nothing is sent then).
pub fn addresses(cidr: &str, opts: &ScanOptions) -> Result<Vec<IpAddr>> {
    let bad = |why: &str| Error::InvalidArgument(format!("--scan {cidr:?}: {why}"));
    let (addr, prefix) = match cidr.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (cidr, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| bad("not an address range (give a.b.c.d/n, e.g. 192.168.1.0/24)"))?;
    let list = match ip {
        IpAddr::V6(v6) => {
            if !matches!(prefix, None | Some("128")) {
                return Err(bad("IPv6 scans take one address (::1)"));
            }
            vec![IpAddr::V6(v6)]
        }
        IpAddr::V4(v4) => {
            let prefix: u32 = match prefix {
                None => 32,
                Some(p) => p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| bad("the prefix is a number from 0 to 32"))?,
            };
            let count = 1u64 << (32 - prefix);
            if count > MAX_SCAN_ADDRESSES && !opts.force {
                return Err(bad(&format!(
                    "{count} addresses is more than a /16: narrow the range, or force it (--force)"
                )));
            }
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let network = u32::from(v4) & mask;
            let (first, last) = if prefix <= 30 {
                (network + 1, network + (count as u32 - 1) - 1)
            } else {
                (network, network + (count as u32 - 1))
            };
            (first..=last)
                .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
                .collect()
        }
    };
    if opts.loopback_only {
        if let Some(outside) = list.iter().find(|ip| !ip.is_loopback()) {
            return Err(bad(&format!(
                "{outside} is not a loopback address, and this scan is held to loopback (UOTA_LOOPBACK_ONLY)"
            )));
        }
    }
    Ok(list)
}

/// Connect to `link` (TCP), say hello and report the device.
///
/// # Errors
///
/// Transport errors and [`Error::Timeout`] when nothing answers in `wait`;
/// [`Error::Protocol`] when something that is not a device answers.
pub async fn probe(host: &str, port: u16, wait: Duration) -> Result<Discovered> {
    let link = Link::tcp(host, port);
    let opened = link.open(wait).await?;
    let peer = Device::probe(opened.io, wait).await?;
    Ok(Discovered::from_peer(host.to_string(), port, &peer))
}

/// Scan `cidr` on `opts.port`: every address probed, `opts.concurrency` at
/// once; the devices that answered, in address order. Addresses where
/// nothing listens, or something that is not a device answers, are left
/// out.
///
/// # Errors
///
/// Those of [`addresses`]; nothing is sent then.
pub async fn scan(cidr: &str, opts: &ScanOptions) -> Result<Vec<Discovered>> {
    let list = addresses(cidr, opts)?;
    let (port, wait) = (opts.port, opts.timeout);
    let found = super::concurrent::each(list, opts.concurrency, |ip| async move {
        let host = ip.to_string();
        match tokio::time::timeout(wait, probe(&host, port, wait)).await {
            Ok(Ok(found)) => Some(found),
            Ok(Err(e)) => {
                tracing::debug!(%host, port, error = %e, "scan: no device");
                None
            }
            Err(_) => None,
        }
    })
    .await;
    Ok(found.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(cidr: &str) -> Result<Vec<IpAddr>> {
        addresses(cidr, &ScanOptions::default())
    }

    #[test]
    fn ranges_expand_without_network_and_broadcast() {
        let l = list("127.0.9.0/24").unwrap();
        assert_eq!(l.len(), 254);
        assert_eq!(l[0].to_string(), "127.0.9.1");
        assert_eq!(l[253].to_string(), "127.0.9.254");
        assert_eq!(list("127.0.9.7").unwrap().len(), 1);
        assert_eq!(list("127.0.9.6/31").unwrap().len(), 2);
        assert_eq!(list("127.0.9.9/30").unwrap().len(), 2);
        assert_eq!(list("::1").unwrap().len(), 1);
        assert_eq!(list("10.1.0.0/16").unwrap().len(), 65534);
    }

    #[test]
    fn large_malformed_and_outside_ranges_are_refused() {
        for (cidr, says) in [
            ("10.0.0.0/8", "more than a /16"),
            ("0.0.0.0/0", "more than a /16"),
            ("127.0.0.0/33", "prefix"),
            ("hello", "not an address range"),
            ("fe80::/64", "IPv6"),
        ] {
            let e = list(cidr).unwrap_err().to_string();
            assert!(e.contains(says), "{cidr}: {e}");
        }
        let forced = ScanOptions {
            force: true,
            ..ScanOptions::default()
        };
        assert_eq!(
            addresses("10.0.0.0/15", &forced).unwrap().len(),
            (1 << 17) - 2
        );
        let held = ScanOptions {
            loopback_only: true,
            ..ScanOptions::default()
        };
        assert!(addresses("127.0.9.0/24", &held).is_ok());
        let e = addresses("192.168.1.0/24", &held).unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
    }
}
