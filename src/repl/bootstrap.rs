//! Installing the uota device runtime on a board over its REPL.
//!
//! [`bootstrap`] leaves a board as `uota sim` provisions a virtual device: the
//! rendered runtime (`boot.py`, the placeholder `main.py`, `lib/uota/**`),
//! `config/ota.json`, `config/.ota.secrets.json` (the password's verifier,
//! never the password) and an empty `/data`, with no release installed: every
//! top-level `ota_*` entry (manifest, version, boot state, release floor,
//! staging area, previous release) is removed, so an earlier runtime's state
//! cannot roll the new one back. Files of `/lib/uota` that the new runtime
//! does not have (an older version's modules, `.py` twins of `.mpy` files and
//! the other way round) are removed too; the app's files and `/data` stay.
//!
//! Everything goes through one run of the file agent ([`ReplFs::put_files`]),
//! files the board already has are not sent again, and the board is then
//! soft-reset, so that it boots into uota.

use std::collections::BTreeSet;

use super::fs::{FsOptions, PutReport, ReplFs, TreeFile};
use super::info::{compile_runtime, BoardInfo, MpyCross};
use super::{Repl, ReplMode};
use crate::auth::{Password, SigningKey};
use crate::config::Project;
use crate::error::{DeviceErrorCode, Error, Result};
use crate::manifest::FileSource;
use crate::templates::{self, RenderedFile, RuntimeCode, RuntimeSettings, RUNTIME_DIR};
use crate::transport::Transport;

/// What a board prints when it soft-resets.
const SOFT_REBOOT: &[u8] = b"soft reboot";

/// How to bootstrap a board.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Install the runtime's modules (all but `boot.py` and `main.py`) as
    /// `.mpy`, compiled for the board's bytecode version.
    pub mpy: bool,
    /// Without [`mpy`](Self::mpy): install `.mpy` all the same when an
    /// `mpy-cross` of the board's bytecode version is found, else `.py`
    /// (what `uota bootstrap` does unless told `--py` or `--mpy`).
    pub mpy_if_possible: bool,
    /// The OTA password (its verifier is installed); `None` takes the
    /// project's, else the board gets none.
    pub password: Option<Password>,
    /// The release-signing key; `None` takes the project's (`signingKey`, or
    /// the key `fleetKey` derives for the board's unique id).
    pub signing_key: Option<SigningKey>,
    /// Settings baked into the runtime.
    pub settings: RuntimeSettings,
    /// The file transfer's options.
    pub fs: FsOptions,
    /// Soft-reset the board at the end, so that it boots into uota.
    pub reset: bool,
    /// The compiler for [`mpy`](Self::mpy); `None` looks for `mpy-cross`.
    pub mpy_cross: Option<MpyCross>,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            mpy: false,
            mpy_if_possible: false,
            password: None,
            signing_key: None,
            settings: RuntimeSettings::default(),
            fs: FsOptions::default(),
            reset: true,
            mpy_cross: None,
        }
    }
}

/// What [`bootstrap`] did.
#[derive(Debug, Clone)]
pub struct BootstrapReport {
    /// The board, as read before the install.
    pub board: BoardInfo,
    /// Device paths of the files installed (relative: `lib/uota/hal.mpy`).
    pub files: Vec<String>,
    /// How many of them were compiled to `.mpy`.
    pub compiled: usize,
    /// Device paths removed: earlier state, stale runtime files.
    pub removed: Vec<String>,
    /// The transfer.
    pub put: PutReport,
    /// Whether the board was reset into the runtime.
    pub reset: bool,
}

/// The files a bootstrap installs (before any `.mpy` compilation): the
/// rendered runtime, `config/ota.json` (the project's device config, else
/// the settings' port and transports) and `config/.ota.secrets.json`.
///
/// `device_id` is the board's unique id, for a project that signs with a
/// fleet key.
pub fn bootstrap_files(
    project: Option<&Project>,
    opts: &BootstrapOptions,
    device_id: Option<&str>,
) -> Result<Vec<RenderedFile>> {
    let mut files = templates::render_runtime(&opts.settings)?;
    let config = match project {
        Some(p) => p.device_config_json(),
        None => serde_json::to_vec_pretty(&serde_json::json!({
            "port": opts.settings.port,
            "transports": opts.settings.transports,
        }))
        .expect("json"),
    };
    files.push(RenderedFile {
        path: "config/ota.json".into(),
        contents: config,
    });
    let secrets = project.map(|p| &p.secrets);
    let password = opts
        .password
        .clone()
        .or_else(|| secrets.and_then(|s| s.ota_password.clone()));
    let key = opts.signing_key.clone().or_else(|| {
        let s = secrets?;
        match device_id {
            Some(id) => s.key_for_device(id),
            None => {
                if s.signing_key.is_none() && s.fleet_key.is_some() {
                    tracing::warn!(
                        "the project signs with a fleet key but the board has no unique id: \
                         no signing key installed"
                    );
                }
                s.signing_key.clone()
            }
        }
    });
    // The same shape as a provisioned virtual device's (uota::sim).
    let secrets = serde_json::json!({
        "otaPassword": password.as_ref().map(|p| p.verifier()).unwrap_or_default(),
        "signingKey": key.as_ref().map(|k| k.expose().to_string()).unwrap_or_default(),
    });
    files.push(RenderedFile {
        path: "config/.ota.secrets.json".into(),
        contents: serde_json::to_vec(&secrets).expect("json"),
    });
    Ok(files)
}

/// Install the uota runtime on the board behind `repl` (see the module docs).
///
/// # Errors
///
/// REPL and transfer errors; [`Error::InvalidArgument`] for `mpy` without a
/// suitable `mpy-cross` (none found, or another bytecode version than the
/// board's).
pub async fn bootstrap<T: Transport>(
    repl: &mut Repl<T>,
    project: Option<&Project>,
    opts: &BootstrapOptions,
) -> Result<BootstrapReport> {
    let board = BoardInfo::read(repl).await?;
    tracing::info!(
        micropython = %board.micropython,
        platform = %board.platform,
        mem_free = board.mem_free,
        "bootstrap: board"
    );
    let mut files = bootstrap_files(project, opts, board.unique_id.as_deref())?;
    let code = if opts.mpy {
        RuntimeCode::Bytecode
    } else if opts.mpy_if_possible {
        RuntimeCode::Auto
    } else {
        RuntimeCode::Source
    };
    let compiled = compile_runtime(&mut files, &board, code, opts.mpy_cross.as_ref())?;
    let installed: BTreeSet<String> = files.iter().map(|f| format!("/{}", f.path)).collect();

    let mut fs = ReplFs::open(repl, opts.fs.clone()).await?;
    let mut removed = Vec::new();
    // Earlier OTA state: a fresh board has none.
    for entry in fs.ls("/").await? {
        if entry.name.starts_with("ota_") {
            let path = format!("/{}", entry.name);
            fs.rm(&path, true).await?;
            removed.push(path);
        }
    }
    // Runtime files the new runtime does not have.
    let runtime_dirs: BTreeSet<String> = installed
        .iter()
        .filter(|p| p.starts_with(&format!("/{RUNTIME_DIR}/")))
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    for dir in &runtime_dirs {
        let entries = match fs.ls(dir).await {
            Ok(e) => e,
            Err(Error::Device {
                code: DeviceErrorCode::NotFound,
                ..
            }) => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let path = format!("{dir}/{}", e.name);
            let stale = e.kind == super::fs::EntryKind::File
                && !installed.contains(&path)
                && (e.name.ends_with(".py") || e.name.ends_with(".mpy"));
            if stale {
                fs.rm(&path, false).await?;
                removed.push(path);
            }
        }
    }
    let tree: Vec<TreeFile> = files
        .iter()
        .map(|f| TreeFile {
            path: f.path.clone(),
            data: FileSource::Bytes(f.contents.clone()),
        })
        .collect();
    let put = fs
        .put_files(&["/data".to_string()], &tree, &mut |p| {
            tracing::debug!(path = %p.path, done = p.files_done, total = p.files_total, "bootstrap: sent");
        })
        .await?;
    fs.close().await?;
    tracing::info!(
        sent = put.files_sent,
        unchanged = put.files_skipped,
        compiled,
        removed = removed.len(),
        "bootstrap: runtime installed"
    );

    if opts.reset {
        soft_reset_into_runtime(repl).await?;
    }
    Ok(BootstrapReport {
        board,
        files: files.into_iter().map(|f| f.path).collect(),
        compiled,
        removed,
        put,
        reset: opts.reset,
    })
}

/// Ctrl-D at the raw prompt: the board restarts and runs `boot.py`, which
/// starts the runtime and does not return, so no prompt comes back. Waits for
/// the reboot to show, then leaves the REPL state unknown (the next exec
/// interrupts the runtime first).
async fn soft_reset_into_runtime<T: Transport>(repl: &mut Repl<T>) -> Result<()> {
    repl.ensure_raw().await?;
    repl.write_raw(b"\x04").await?;
    repl.machine_mut().set_mode(ReplMode::Unknown);
    let after = repl.config().timeouts.soft_reset;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(after, async {
        while !seen.windows(SOFT_REBOOT.len()).any(|w| w == SOFT_REBOOT) {
            match repl.read_raw(&mut buf).await? {
                0 => {
                    return Err(Error::ConnectionClosed {
                        during: "the soft reset after bootstrap".into(),
                    })
                }
                n => seen.extend_from_slice(&buf[..n]),
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            what: "the board to soft-reset after bootstrap".into(),
            after,
        }),
    }
}
