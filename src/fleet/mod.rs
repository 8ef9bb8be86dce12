//! Fleets: the devices of an inventory, found by a scan, updated in waves.
//!
//! - [`Inventory`]: `config/fleet.json`, devices with names, addresses,
//!   tags and expected ids.
//! - [`discover`]: a concurrent connect-scan of an address range that reads
//!   each device's hello (no password needed).
//! - [`Rollout`]: one release to many devices — waves ([`Groups`]),
//!   concurrency, failure thresholds ([`Threshold`]), health gates, retries
//!   for link failures, a state file that `--resume` continues — reporting
//!   [`FleetEvent`]s as it goes and a [`RolloutReport`] (JSON, JUnit) at the
//!   end.
//! - [`status`]: every device's release state, gathered concurrently.
//! - [`RolloutPlan`]: a project's rollout from what a front end is given
//!   (the CLI's options, Python's arguments), checked and combined once.
//!
//! See `docs/fleet.md`.

mod concurrent;
pub(crate) use concurrent::each;
pub mod discover;
mod inventory;
mod plan;
mod report;
mod rollout;
mod select;
mod state;
pub mod status;

pub use discover::{Discovered, ScanOptions};
pub use inventory::{FleetDevice, Inventory, MergeSummary, INVENTORY_FILE};
pub use plan::{Resume, RolloutPlan};
pub use report::{
    Counts, DeviceError, DeviceResult, DeviceStatus, GroupSummary, Outcome, RolloutReport,
};
pub use rollout::{FleetEvent, Rollout, RolloutOptions, StopHandle};
pub use select::{Groups, Selection, Size, Threshold};
pub use state::{release_digest, RolloutState, ROLLOUTS_DIR};
pub use status::DeviceState;
