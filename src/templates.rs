//! Renders the MicroPython device runtime (`device/`) into the files a device gets.
//!
//! The templates are embedded in the crate at build time. Only
//! `lib/uota/settings.py` carries `{{name}}` placeholders: the settings a
//! build bakes in. [`render_runtime`] fills them; [`freeze_manifest`] writes a
//! MicroPython freeze manifest for building the runtime into firmware.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/device_files.rs"));

/// Version of the device runtime shipped with this crate.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the runtime's modules live on a device (`lib/uota/server.py`).
pub const RUNTIME_DIR: &str = "lib/uota";

/// How the runtime's modules are installed on a device (a board by
/// `uota bootstrap`, a virtual device by `uota sim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeCode {
    /// `.py` files, compiled by the device at import.
    #[default]
    Source,
    /// `.mpy` files compiled by `mpy-cross` for the device's bytecode
    /// version; an error when there is no such `mpy-cross`.
    Bytecode,
    /// `.mpy` when a matching `mpy-cross` is found, else `.py` (what
    /// `uota sim` and `uota bootstrap` do).
    Auto,
}

impl std::str::FromStr for RuntimeCode {
    type Err = Error;

    /// `"py"`, `"mpy"` or `"auto"`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "py" => Ok(RuntimeCode::Source),
            "mpy" => Ok(RuntimeCode::Bytecode),
            "auto" => Ok(RuntimeCode::Auto),
            other => Err(Error::InvalidArgument(format!(
                "runtime code must be \"py\", \"mpy\" or \"auto\", not {other:?}"
            ))),
        }
    }
}

/// Settings baked into a rendered runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Runtime version string reported by the device.
    pub runtime_version: String,
    /// Default OTA TCP port (config `port` overrides it).
    pub port: u16,
    /// Largest frame payload the device accepts (its receive buffer size).
    pub max_frame: usize,
    /// Seconds of silence after which the device drops a connection.
    pub session_timeout: u32,
    /// Transports started at boot (`wifi_tcp`, …).
    pub transports: Vec<String>,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            runtime_version: RUNTIME_VERSION.to_string(),
            port: 2018,
            max_frame: 8192,
            session_timeout: 30,
            transports: vec!["wifi_tcp".to_string()],
        }
    }
}

impl RuntimeSettings {
    fn vars(&self) -> BTreeMap<&'static str, String> {
        let transports = serde_json::to_string(&self.transports).expect("strings serialize");
        BTreeMap::from([
            (
                "runtime_version",
                self.runtime_version.replace(['"', '\\', '\n'], ""),
            ),
            ("port", self.port.to_string()),
            ("max_frame", self.max_frame.to_string()),
            ("session_timeout", self.session_timeout.to_string()),
            ("transports", transports),
        ])
    }
}

/// One rendered file: its device path and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Path on the device, relative to its root (`lib/uota/server.py`).
    pub path: String,
    /// File contents.
    pub contents: Vec<u8>,
}

/// Replace every `{{name}}` in `template` with `vars[name]`.
///
/// An unknown placeholder or an unclosed `{{` is an error, so a template and
/// its settings cannot drift apart silently.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::InvalidArgument("unclosed {{ in a device template".into()))?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("device template uses unknown setting {name:?}"))
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The runtime files installed on a device: `boot.py`, the default `main.py`
/// and `lib/uota/**`, with the settings filled in.
pub fn render_runtime(settings: &RuntimeSettings) -> Result<Vec<RenderedFile>> {
    let vars = settings.vars();
    DEVICE_FILES
        .iter()
        .filter(|(path, _)| !path.starts_with("sim/"))
        .map(|(path, text)| {
            Ok(RenderedFile {
                path: path.to_string(),
                contents: render(text, &vars)?.into_bytes(),
            })
        })
        .collect()
}

/// The files of the virtual-device boot shim run by [`crate::sim`] (not
/// installed on devices), by name: the launcher given to the interpreter
/// first (`simboot.py`), then the modules it imports (`simshim.py`, the
/// machinery; `simdisk.py`, what stays loaded while the device runs).
pub fn sim_shim_sources() -> Result<Vec<(&'static str, &'static str)>> {
    ["simboot.py", "simshim.py", "simdisk.py"]
        .into_iter()
        .map(|name| {
            DEVICE_FILES
                .iter()
                .find(|(p, _)| p.strip_prefix("sim/") == Some(name))
                .map(|(_, text)| (name, *text))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("device/sim/{name} is missing from the build"))
                })
        })
        .collect()
}

/// Write the virtual-device boot shim into `dir` as source; returns the
/// path to give the interpreter (the launcher).
pub fn write_sim_shim(dir: &Path) -> Result<PathBuf> {
    for (name, text) in sim_shim_sources()? {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(dir.join("simboot.py"))
}

/// Write rendered files under `dir`, creating folders as needed.
pub fn write_tree(files: &[RenderedFile], dir: &Path) -> Result<()> {
    for f in files {
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&dest, &f.contents).map_err(|e| Error::io(&dest, e))?;
    }
    Ok(())
}

/// A MicroPython `manifest.py` that freezes the runtime package into firmware.
///
/// `dir` is where the rendered runtime was written with [`write_tree`].
pub fn freeze_manifest(dir: &Path) -> String {
    let lib = dir.join("lib");
    format!(
        "# Freezes the uota device runtime; include it from a board's manifest.py.\n\
         package(\"uota\", base_path={:?})\n",
        lib.display().to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_placeholders_and_refuses_unknown() {
        let vars = BTreeMap::from([("port", "2018".to_string())]);
        assert_eq!(render("PORT = {{port}}\n", &vars).unwrap(), "PORT = 2018\n");
        assert_eq!(render("P = {{ port }}", &vars).unwrap(), "P = 2018");
        assert!(render("X = {{nope}}", &vars).is_err());
        assert!(render("X = {{port", &vars).is_err());
    }

    #[test]
    fn runtime_has_its_parts_and_no_placeholders_left() {
        let files = render_runtime(&RuntimeSettings::default()).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        for needed in [
            "boot.py",
            "main.py",
            "lib/uota/settings.py",
            "lib/uota/hal.py",
            "lib/uota/layout.py",
            "lib/uota/boot_guard.py",
            "lib/uota/boot_state.py",
            "lib/uota/recovery.py",
            "lib/uota/session.py",
            "lib/uota/receiver.py",
        ] {
            assert!(paths.contains(&needed), "missing {needed} in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.starts_with("sim/")));
        for f in &files {
            let text = String::from_utf8(f.contents.clone()).unwrap();
            assert!(!text.contains("{{"), "{} keeps a placeholder", f.path);
        }
        let settings = files
            .iter()
            .find(|f| f.path == "lib/uota/settings.py")
            .unwrap();
        let text = String::from_utf8(settings.contents.clone()).unwrap();
        assert!(text.contains("PORT = 2018"));
        assert!(text.contains(r#"TRANSPORTS = ["wifi_tcp"]"#));
    }
}
