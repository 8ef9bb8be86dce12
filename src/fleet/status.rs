//! Every device's state at once: `uota status --all`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::device::{ConnectOptions, Device};

use super::inventory::FleetDevice;

/// What one device reports, or why it could not be asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Its inventory name.
    pub name: String,
    /// Where it was asked.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// The id it reported.
    pub id: Option<String>,
    /// The active release's version.
    pub version: Option<String>,
    /// The highest release number it has accepted.
    pub release: Option<u64>,
    /// `confirmed`, or `pending` while the release waits for confirmation.
    pub state: Option<String>,
    /// The last rollback (`from`, `to`, `reason`), if any.
    pub last_rollback: Option<serde_json::Value>,
    /// Boots so far, and crashes in a row (`boots`, `crashes`, `clean`).
    pub boot: Option<serde_json::Value>,
    /// The uota runtime's version.
    pub runtime: Option<String>,
    /// Why it could not be asked (or the id it reported is not the expected one).
    pub error: Option<String>,
}

/// Ask every device for its state, `concurrency` at once, each within
/// `timeout`; in the order given.
pub async fn gather(
    devices: &[FleetDevice],
    connect: &ConnectOptions,
    concurrency: usize,
    timeout: Duration,
) -> Vec<DeviceState> {
    let opts = ConnectOptions {
        connect_retry: Duration::ZERO,
        ..connect.clone()
    };
    super::concurrent::each(devices.to_vec(), concurrency, |dev| {
        let opts = opts.clone();
        async move {
            match tokio::time::timeout(timeout, ask(&dev, opts)).await {
                Ok(s) => s,
                Err(_) => DeviceState {
                    error: Some(format!("no answer within {timeout:?}")),
                    ..unasked(&dev)
                },
            }
        }
    })
    .await
}

fn unasked(dev: &FleetDevice) -> DeviceState {
    DeviceState {
        name: dev.name.clone(),
        address: dev.address(),
        ..DeviceState::default()
    }
}

async fn ask(entry: &FleetDevice, opts: ConnectOptions) -> DeviceState {
    let mut st = unasked(entry);
    let mut dev = match Device::open(&entry.link(), opts).await {
        Ok(d) => d,
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    st.reachable = true;
    let id = dev.device_id().to_string();
    st.id = (!id.is_empty()).then(|| id.clone());
    st.release = Some(dev.highest_release());
    if let Some(expected) = entry.id.as_ref().filter(|e| **e != id) {
        st.error = Some(format!(
            "the device here reports id {id:?}, the inventory expects {expected:?}"
        ));
        return st;
    }
    match dev.info().await {
        Ok(info) => {
            let get = |k: &str| info.extra.get(k).cloned();
            let release = info.release();
            st.version = Some(info.version.clone());
            st.state = info.extra.contains_key("release").then_some(release.state);
            st.last_rollback = release.last_rollback;
            st.boot = get("boot");
            st.runtime = get("runtime").and_then(|v| v.as_str().map(str::to_string));
        }
        Err(e) => st.error = Some(e.to_string()),
    }
    let _ = dev.close().await;
    st
}
