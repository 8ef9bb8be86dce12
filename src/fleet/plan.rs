//! A project's rollout from what a front end is given: `uota full|fast
//! --all` and Python's `uota.rollout` both describe one as a
//! [`RolloutPlan`] (the devices, a selection, a version, new or resumed)
//! and [`RolloutPlan::prepare`] turns it into a [`Rollout`], so that both
//! check and combine their inputs the same way.

use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::config::Project;
use crate::error::{Error, Result};

use super::inventory::{FleetDevice, Inventory};
use super::rollout::{Rollout, RolloutOptions};
use super::select::Selection;
use super::state::RolloutState;

/// Which rollout a plan runs: a new one, or one that stopped or crashed,
/// continued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resume {
    /// A new rollout.
    #[default]
    New,
    /// The newest rollout of the project that did not finish.
    Latest,
    /// The rollout with this id (its state file is `<id>.json`).
    Id(String),
}

impl Resume {
    /// The state file to continue from, in `state_dir`; `None` for a new
    /// rollout.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no unfinished rollout is there (for
    /// [`Resume::Latest`]); [`Error::InvalidArgument`] for an id that is not
    /// a plain file name.
    pub fn state_file(&self, state_dir: &Path) -> Result<Option<PathBuf>> {
        match self {
            Resume::New => Ok(None),
            Resume::Latest => RolloutState::latest_unfinished(state_dir).map(Some),
            Resume::Id(id) => {
                let plain = !id.is_empty()
                    && id != "."
                    && id != ".."
                    && !id.contains(['/', '\\'])
                    && !id.chars().any(char::is_control);
                if !plain {
                    return Err(Error::InvalidArgument(format!(
                        "resume {id:?}: not a rollout id (they look like 20261203-184612-3fa9)"
                    )));
                }
                Ok(Some(RolloutState::path(state_dir, id)))
            }
        }
    }
}

/// What to roll out, and to which devices.
#[derive(Debug, Clone, Default)]
pub struct RolloutPlan {
    /// The devices, canaries first (`None`: those of the project's
    /// inventory, `config/fleet.json`).
    pub devices: Option<Vec<FleetDevice>>,
    /// Which of them (`None`: every one).
    pub select: Option<Selection>,
    /// The version released instead of the project's `version`.
    pub version: Option<String>,
    /// Build the release strictly ([`Bundle::for_push`]): a file pattern
    /// that matches nothing is an error.
    pub strict: bool,
    /// A new rollout or one continued.
    pub resume: Resume,
}

impl RolloutPlan {
    /// The rollout of `project` this plan describes, run with `opts`
    /// ([`RolloutOptions::for_project`] with the caller's settings on top):
    /// the devices chosen, the state file to continue from found, then the
    /// release built once, in `opts.push.mode`. Nothing is sent to a device.
    ///
    /// # Errors
    ///
    /// Those of [`Inventory::load_devices`] (no `devices`),
    /// [`Selection::apply`], [`Resume::state_file`] (and
    /// [`Error::InvalidArgument`] for a resume without
    /// `opts.state_dir`), [`Bundle::for_push`], [`Rollout::new`] and
    /// [`Rollout::resume`].
    pub fn prepare(self, project: &Project, opts: RolloutOptions) -> Result<Rollout> {
        let devices = match self.devices {
            Some(devices) => devices,
            None => Inventory::load_devices(&Inventory::path_in(&project.root))?,
        };
        let devices = match &self.select {
            Some(selection) => selection.apply(&devices)?,
            None => devices,
        };
        let state_file = match (&opts.state_dir, &self.resume) {
            (_, Resume::New) => None,
            (Some(dir), resume) => resume.state_file(dir)?,
            (None, _) => {
                return Err(Error::InvalidArgument(
                    "a rollout that writes no state cannot be resumed".into(),
                ))
            }
        };
        let mut bundle = Bundle::for_push(project, opts.push.mode, self.strict)?;
        if let Some(v) = self.version {
            bundle.set_version(v);
        }
        match state_file {
            Some(path) => Rollout::resume(&path, devices, bundle, opts),
            None => Rollout::new(devices, bundle, opts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_are_file_names() {
        let dir = Path::new("/p/.uota/rollouts");
        assert_eq!(Resume::New.state_file(dir).unwrap(), None);
        assert_eq!(
            Resume::Id("20261203-184612-3fa9".into())
                .state_file(dir)
                .unwrap(),
            Some(dir.join("20261203-184612-3fa9.json"))
        );
        for bad in ["", "..", "../x", "a/b", "a\\b", "a\nb"] {
            let e = Resume::Id(bad.into()).state_file(dir).unwrap_err();
            assert!(e.to_string().contains("not a rollout id"), "{bad:?}: {e}");
        }
        let empty = tempfile::tempdir().unwrap();
        let e = Resume::Latest.state_file(empty.path()).unwrap_err();
        assert!(e.to_string().contains("no unfinished rollout"), "{e}");
    }
}
