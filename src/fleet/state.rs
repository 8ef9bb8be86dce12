//! A rollout's state on disk (`.uota/rollouts/<id>.json`), rewritten
//! atomically after every device, so that `--resume` continues a stopped or
//! crashed rollout without touching the devices it finished.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::Bundle;
use crate::error::{Error, Result};

use super::report::DeviceResult;

/// Where a project keeps its rollouts' state.
pub const ROLLOUTS_DIR: &str = ".uota/rollouts";

/// What a rollout has done so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The rollout's id.
    pub id: String,
    /// `full` or `fast`.
    pub mode: String,
    /// The version rolled out.
    pub version: String,
    /// The release's digest ([`release_digest`]): a resume must roll out
    /// the same files.
    pub digest: String,
    /// When it started (seconds since the Unix epoch).
    pub created: u64,
    /// Every device is done with.
    pub finished: bool,
    /// The devices done with, in the order they ended.
    pub devices: Vec<DeviceResult>,
}

/// A digest of what a bundle releases: its version and every file's path,
/// size and SHA-256.
pub fn release_digest(bundle: &Bundle) -> String {
    let m = bundle.manifest();
    let mut h = Sha256::new();
    h.update(m.version.as_bytes());
    h.update(b"\n");
    h.update(m.manifest_lines());
    hex::encode(h.finalize())
}

/// A new rollout id: the time and a random suffix (`20261203-184612-3fa9`).
pub fn new_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{:04x}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        rand::random::<u16>()
    )
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl RolloutState {
    /// The state file of rollout `id` in `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Read a state file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when it is missing or not a rollout's state.
    pub fn load(path: &Path) -> Result<RolloutState> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("no rollout state here ({e})"),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("not a rollout's state ({e})"),
        })
    }

    /// Write it to `dir` (a temporary file renamed over the old one).
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a rollout state serializes");
        crate::config::write_atomic(&Self::path(dir, &self.id), &text, false)
    }

    /// The state file of the newest rollout in `dir` that did not finish.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is none.
    pub fn latest_unfinished(dir: &Path) -> Result<PathBuf> {
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Ok(state) = RolloutState::load(&path) else {
                    continue;
                };
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                if !state.finished && best.as_ref().is_none_or(|(t, _)| modified > *t) {
                    best = Some((modified, path));
                }
            }
        }
        best.map(|(_, p)| p).ok_or_else(|| Error::Config {
            path: dir.to_path_buf(),
            message: "no unfinished rollout to resume".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let id = new_id();
        assert_eq!(id.len(), "20261203-184612-3fa9".len(), "{id}");
    }
}
