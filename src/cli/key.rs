//! `uota key`: create keys, derive a device's key, rotate a device's key.
//!
//! Keys live in `config/.ota.secrets.json` (owner-only, git-ignored) and are
//! never printed except by `key derive`, whose job is to print one for
//! provisioning; the other commands print a key's fingerprint instead.

use clap::Subcommand;

use super::output::Output;
use super::{connect, project_root, Target};
use crate::auth::{key_fingerprint, FleetKey, SigningKey};
use crate::config::{
    Project, FLEET_KEY_KEY, NEXT_FLEET_KEY_KEY, NEXT_SIGNING_KEY_KEY, SIGNING_KEY_KEY,
};
use crate::error::{Error, Result};

/// The `uota key` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a random key in config/.ota.secrets.json (prints its fingerprint only).
    New {
        /// Create a fleet key (`fleetKey`): each device signs with its own key derived from it.
        #[arg(long)]
        fleet: bool,
        /// Create the next key (`nextSigningKey`/`nextFleetKey`) that `uota key rotate` installs.
        #[arg(long)]
        next: bool,
        /// Replace a key that is already set.
        #[arg(long)]
        force: bool,
        /// Project folder (default: the current folder).
        #[arg(long)]
        project: Option<std::path::PathBuf>,
    },
    /// Print the signing key of one device, derived from the fleet key (for provisioning).
    Derive {
        /// The device id (`uota info` shows it as `id`).
        #[arg(long)]
        device: String,
        /// Derive from `nextFleetKey` instead of `fleetKey`.
        #[arg(long)]
        next: bool,
        /// Project folder (default: the current folder).
        #[arg(long)]
        project: Option<std::path::PathBuf>,
    },
    /// Replace the device's signing key with the next key, in a message signed by the current one.
    Rotate(Target),
    /// After every device was rotated: make the next keys the current ones.
    Promote {
        /// Project folder (default: the current folder).
        #[arg(long)]
        project: Option<std::path::PathBuf>,
    },
}

pub(crate) async fn run(cmd: KeyCommand, out: &Output) -> Result<()> {
    match cmd {
        KeyCommand::New {
            fleet,
            next,
            force,
            project,
        } => {
            let project = Project::load(&project_root(&project))?;
            let name = match (fleet, next) {
                (false, false) => SIGNING_KEY_KEY,
                (true, false) => FLEET_KEY_KEY,
                (false, true) => NEXT_SIGNING_KEY_KEY,
                (true, true) => NEXT_FLEET_KEY_KEY,
            };
            let s = &project.secrets;
            let set = match name {
                SIGNING_KEY_KEY => s.signing_key.is_some(),
                FLEET_KEY_KEY => s.fleet_key.is_some(),
                NEXT_SIGNING_KEY_KEY => s.next_signing_key.is_some(),
                _ => s.next_fleet_key.is_some(),
            };
            if set && !force {
                return Err(Error::InvalidArgument(format!(
                    "{name} is already set in {}; pass --force to replace it (devices signed with it will refuse the new one until rotated)",
                    project.secrets_path().display()
                )));
            }
            let key = FleetKey::generate();
            project.store_secrets(&[(name, key.expose())])?;
            out.value(name, &key_fingerprint(key.expose().as_bytes()));
            Ok(())
        }
        KeyCommand::Derive {
            device,
            next,
            project,
        } => {
            let project = Project::load(&project_root(&project))?;
            let fleet = if next {
                &project.secrets.next_fleet_key
            } else {
                &project.secrets.fleet_key
            };
            let Some(fleet) = fleet else {
                return Err(Error::Config {
                    path: project.secrets_path(),
                    message: format!(
                        "no {} set; create one with `uota key new --fleet{}`",
                        if next {
                            NEXT_FLEET_KEY_KEY
                        } else {
                            FLEET_KEY_KEY
                        },
                        if next { " --next" } else { "" }
                    ),
                });
            };
            if device.is_empty() || device.len() > 64 || device.chars().any(char::is_control) {
                return Err(Error::InvalidArgument(
                    "a device id is 1-64 characters without control characters".into(),
                ));
            }
            let key = fleet.derive(&device);
            out.value("signingKey", key.expose());
            Ok(())
        }
        KeyCommand::Rotate(target) => {
            let (mut dev, project) = connect(&target).await?;
            let Some(project) = project else {
                return Err(Error::InvalidArgument(
                    "key rotate needs a project with config/.ota.secrets.json".into(),
                ));
            };
            let id = dev.device_id().to_string();
            let current = project.secrets.key_for_device(&id).ok_or_else(|| {
                no_key(
                    &project,
                    "signingKey or fleetKey (the key the device holds now)",
                )
            })?;
            let next = project
                .secrets
                .next_key_for_device(&id)
                .ok_or_else(|| no_key(&project, "nextSigningKey or nextFleetKey"))?;
            if next == current {
                return Err(Error::InvalidArgument(
                    "the next key is the current key; create a new one with `uota key new --next`"
                        .into(),
                ));
            }
            dev.rotate_key(&current, &next).await?;
            dev.close().await?;
            out.value("rotated", &format!("{id} {}", fingerprint(&next)));
            Ok(())
        }
        KeyCommand::Promote { project } => {
            let project = Project::load(&project_root(&project))?;
            let s = &project.secrets;
            let mut values: Vec<(&str, String)> = Vec::new();
            if let Some(k) = &s.next_signing_key {
                values.push((SIGNING_KEY_KEY, k.expose().to_string()));
                values.push((NEXT_SIGNING_KEY_KEY, String::new()));
            }
            if let Some(k) = &s.next_fleet_key {
                values.push((FLEET_KEY_KEY, k.expose().to_string()));
                values.push((NEXT_FLEET_KEY_KEY, String::new()));
            }
            if values.is_empty() {
                return Err(no_key(&project, "nextSigningKey or nextFleetKey"));
            }
            let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
            project.store_secrets(&pairs)?;
            out.value("promoted", "ok");
            Ok(())
        }
    }
}

fn fingerprint(key: &SigningKey) -> String {
    key_fingerprint(key.as_bytes())
}

fn no_key(project: &Project, what: &str) -> Error {
    Error::Config {
        path: project.secrets_path(),
        message: format!("no {what} set"),
    }
}
