//! Project configuration, in micro-ota's files and keys.
//!
//! A project is a folder holding `config/ota.json` (settings, committed to
//! git) and optionally `config/.ota.secrets.json` (the device password and the
//! signing key, gitignored). As in micro-ota, every key of the secrets file
//! overrides the same key of `ota.json`. [`Project::load`] reads both;
//! [`Project::init`] writes a starter project.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{FleetKey, Password, SigningKey};
use crate::error::{Error, Result};

/// Project-relative path of the config file (also its path on a device).
pub const DEVICE_CONFIG_PATH: &str = "config/ota.json";
/// Project-relative path of the secrets file.
pub const SECRETS_PATH: &str = "config/.ota.secrets.json";
/// The config key holding the device password (plaintext on the host).
pub const OTA_PASSWORD_KEY: &str = "otaPassword";
/// The config key holding the signing key.
pub const SIGNING_KEY_KEY: &str = "signingKey";
/// The secrets key holding the fleet key (per-device keys are derived from it).
pub const FLEET_KEY_KEY: &str = "fleetKey";
/// The secrets key holding the signing key that `uota key rotate` installs.
pub const NEXT_SIGNING_KEY_KEY: &str = "nextSigningKey";
/// The secrets key holding the fleet key that `uota key rotate` moves devices to.
pub const NEXT_FLEET_KEY_KEY: &str = "nextFleetKey";

/// The starter project [`Project::init`] writes, as `(relative path, contents)`.
///
/// The secrets file is not among them: `init` writes a fresh, empty one.
pub const STARTER_FILES: &[(&str, &str)] = &[
    ("main.py", include_str!("../examples/starter/main.py")),
    (
        "app/__init__.py",
        include_str!("../examples/starter/app/__init__.py"),
    ),
    (
        "app/counter.py",
        include_str!("../examples/starter/app/counter.py"),
    ),
    (
        DEVICE_CONFIG_PATH,
        include_str!("../examples/starter/config/ota.json"),
    ),
    (
        "www/index.html",
        include_str!("../examples/starter/www/index.html"),
    ),
    ("README.md", include_str!("../examples/starter/README.md")),
];

/// What `uota init` makes sure the project's `.gitignore` lists: the
/// secrets, the host's cache, and the folder of a virtual device.
pub const GITIGNORED: &[&str] = &[SECRETS_PATH, ".uota_cache.json", ".uota/", "vdev/"];

/// The folder, in a project, of the devices' last known manifests.
pub const MANIFEST_CACHE_DIR: &str = ".uota/manifests";

fn default_version() -> String {
    "1.0.0".into()
}
fn default_hostname() -> String {
    "micropython.local".into()
}
fn default_port() -> u16 {
    2018
}
fn default_remoteio_port() -> u16 {
    2019
}
fn default_transports() -> Vec<String> {
    vec!["wifi_tcp".into()]
}
fn default_fast_ota_files() -> Vec<String> {
    vec!["app/**".into(), "main.py".into(), "config/**".into()]
}
fn default_full_ota_files() -> Vec<String> {
    vec!["**".into()]
}
fn default_excluded_files() -> Vec<String> {
    vec![".git/**".into(), "*.zip".into(), "dist/**".into()]
}
fn default_mpy_files() -> Vec<String> {
    vec!["lib/**".into()]
}
fn default_ble_name() -> String {
    "micro-ota".into()
}

/// The settings of `config/ota.json`, with micro-ota's key names and defaults.
///
/// Keys this struct does not name are kept in [`extra`](ProjectConfig::extra),
/// so reading and writing a config loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectConfig {
    /// Release version sent with each push (`version`, default `"1.0.0"`).
    #[serde(default = "default_version")]
    pub version: String,
    /// Host: the device's address; device: its mDNS name (`hostname`).
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// OTA TCP port (`port`, default 2018).
    #[serde(default = "default_port")]
    pub port: u16,
    /// RemoteIO TCP port (`remoteioPort`, default 2019; 0 disables it on the device).
    #[serde(default = "default_remoteio_port")]
    pub remoteio_port: u16,
    /// Enabled transports: `wifi_tcp`, `serial`, `ble`, `http_pull` (`transports`).
    #[serde(default = "default_transports")]
    pub transports: Vec<String>,
    /// Globs pushed by a fast push (`fastOtaFiles`).
    #[serde(default = "default_fast_ota_files")]
    pub fast_ota_files: Vec<String>,
    /// Globs a full push adds to the fast ones (`fullOtaFiles`).
    #[serde(default = "default_full_ota_files")]
    pub full_ota_files: Vec<String>,
    /// Globs never pushed (`excludedFiles`).
    #[serde(default = "default_excluded_files")]
    pub excluded_files: Vec<String>,
    /// `.py` globs compiled with mpy-cross before pushing (`mpyFiles`).
    #[serde(default = "default_mpy_files")]
    pub mpy_files: Vec<String>,
    /// WiFi network name for the device (`ssid`).
    #[serde(default)]
    pub ssid: String,
    /// WiFi password for the device (`password`; not the OTA password).
    #[serde(default)]
    pub password: String,
    /// BLE advertised name (`bleName`).
    #[serde(default = "default_ble_name")]
    pub ble_name: String,
    /// The device paths a release may write (`appPaths`, see
    /// [`crate::app_area`]); project files outside it are not pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_paths: Option<Vec<String>>,
    /// Which protocol the host speaks to the device (`protocol`: `auto`,
    /// `uota` or `micro-ota`); only `micro-ota` sends the password in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Whether a uota device also accepts micro-ota's push sessions (`legacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<bool>,
    /// Host serial port; empty or absent = auto-detect (`serialPort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_port: Option<String>,
    /// Serial baud rate (`serialBaud`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_baud: Option<u32>,
    /// HTTP-pull manifest URL (`manifestUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
    /// HTTP-pull poll interval in seconds (`pullInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval: Option<u64>,
    /// HTTP-pull request timeout in seconds (`pullTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_timeout: Option<u64>,
    /// Seconds of silence after which the device drops a connection (`sessionTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<u64>,
    /// Release number to sign pushes with (`release`); absent = one above the
    /// highest the device has accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u64>,
    /// Which devices the project's releases fit (`compat`: `port`, `board`,
    /// `micropython`), checked by the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat: Option<crate::compat::Compat>,
    /// Every other key, kept as it was.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            version: default_version(),
            hostname: default_hostname(),
            port: default_port(),
            remoteio_port: default_remoteio_port(),
            transports: default_transports(),
            fast_ota_files: default_fast_ota_files(),
            full_ota_files: default_full_ota_files(),
            excluded_files: default_excluded_files(),
            mpy_files: default_mpy_files(),
            ssid: String::new(),
            password: String::new(),
            ble_name: default_ble_name(),
            app_paths: None,
            protocol: None,
            legacy: None,
            serial_port: None,
            serial_baud: None,
            manifest_url: None,
            pull_interval: None,
            pull_timeout: None,
            session_timeout: None,
            release: None,
            compat: None,
            extra: Map::new(),
        }
    }
}

/// The project's secrets (micro-ota's `otaPassword` and `signingKey`).
///
/// An empty string in a file means "not set". `Debug` shows no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// The device password, in plaintext (only its verifier goes to a device).
    pub ota_password: Option<Password>,
    /// The release-signing key.
    pub signing_key: Option<SigningKey>,
    /// The fleet key devices' own signing keys are derived from (`fleetKey`).
    pub fleet_key: Option<FleetKey>,
    /// The signing key `uota key rotate` installs (`nextSigningKey`).
    pub next_signing_key: Option<SigningKey>,
    /// The fleet key `uota key rotate` moves devices to (`nextFleetKey`).
    pub next_fleet_key: Option<FleetKey>,
}

impl Secrets {
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.ota_password.is_none()
            && self.signing_key.is_none()
            && self.fleet_key.is_none()
            && self.next_signing_key.is_none()
            && self.next_fleet_key.is_none()
    }

    /// The key that signs releases for the device `device_id`: `signingKey`
    /// when set, else the key derived from `fleetKey`.
    pub fn key_for_device(&self, device_id: &str) -> Option<SigningKey> {
        self.signing_key
            .clone()
            .or_else(|| self.fleet_key.as_ref().map(|f| f.derive(device_id)))
    }

    /// The key `uota key rotate` installs on the device `device_id`:
    /// `nextSigningKey` when set, else the key derived from `nextFleetKey`.
    pub fn next_key_for_device(&self, device_id: &str) -> Option<SigningKey> {
        self.next_signing_key
            .clone()
            .or_else(|| self.next_fleet_key.as_ref().map(|f| f.derive(device_id)))
    }
}

/// A loaded project: its folder, its config and its secrets.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project folder (the one holding `config/`).
    pub root: PathBuf,
    /// The merged configuration, without the secret keys.
    pub config: ProjectConfig,
    /// The secrets.
    pub secrets: Secrets,
}

impl Project {
    /// Load the project in `root`: `config/ota.json`, then the keys of
    /// `config/.ota.secrets.json` (optional) on top.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file when `config/ota.json` is missing
    /// (with a hint to run `uota init`) or either file is malformed;
    /// [`Error::Io`] when a file exists but cannot be read.
    pub fn load(root: &Path) -> Result<Project> {
        let config_path = root.join(DEVICE_CONFIG_PATH);
        let secrets_path = root.join(SECRETS_PATH);
        let Some(base) = read_json_object(&config_path)? else {
            return Err(Error::Config {
                path: config_path,
                message: format!(
                    "no uota project in {} (this file is missing); run `uota init` to create one",
                    root.display()
                ),
            });
        };
        for key in [OTA_PASSWORD_KEY, SIGNING_KEY_KEY] {
            if base
                .get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                tracing::warn!(
                    file = %config_path.display(),
                    key,
                    "a secret is set in config/ota.json; move it to config/.ota.secrets.json, which git ignores"
                );
            }
        }
        let overrides = read_json_object(&secrets_path)?.unwrap_or_default();
        let from_secrets: BTreeSet<String> = overrides.keys().cloned().collect();
        let source_of = |key: &str| {
            if from_secrets.contains(key) {
                secrets_path.clone()
            } else {
                config_path.clone()
            }
        };

        let mut merged = base;
        merged.extend(overrides);
        let ota_password =
            take_secret(&mut merged, OTA_PASSWORD_KEY, &source_of)?.map(Password::new);
        let signing_key =
            take_secret(&mut merged, SIGNING_KEY_KEY, &source_of)?.map(SigningKey::new);
        let fleet_key = take_secret(&mut merged, FLEET_KEY_KEY, &source_of)?.map(FleetKey::new);
        let next_signing_key =
            take_secret(&mut merged, NEXT_SIGNING_KEY_KEY, &source_of)?.map(SigningKey::new);
        let next_fleet_key =
            take_secret(&mut merged, NEXT_FLEET_KEY_KEY, &source_of)?.map(FleetKey::new);

        let config = match serde_json::from_value::<ProjectConfig>(Value::Object(merged.clone())) {
            Ok(config) => config,
            Err(whole) => {
                // Find the key at fault, to name it and the file it came from.
                for (key, value) in &merged {
                    let single: Map<String, Value> =
                        [(key.clone(), value.clone())].into_iter().collect();
                    if let Err(e) = serde_json::from_value::<ProjectConfig>(Value::Object(single)) {
                        return Err(Error::Config {
                            path: source_of(key),
                            message: format!("bad value for \"{key}\": {e}"),
                        });
                    }
                }
                return Err(Error::Config {
                    path: config_path,
                    message: whole.to_string(),
                });
            }
        };
        tracing::debug!(root = %root.display(), version = %config.version, "loaded project");
        Ok(Project {
            root: root.to_path_buf(),
            config,
            secrets: Secrets {
                ota_password,
                signing_key,
                fleet_key,
                next_signing_key,
                next_fleet_key,
            },
        })
    }

    /// Write the starter project into `root` (created if needed): the files of
    /// [`STARTER_FILES`], an empty `config/.ota.secrets.json`, and a
    /// `.gitignore` line for the secrets file.
    ///
    /// Existing files are left alone and make `init` fail, unless `force` is
    /// set; an existing secrets file is never overwritten, even with `force`,
    /// and `.gitignore` is only appended to. Returns the paths written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] listing the files that already exist;
    /// [`Error::Io`] when writing fails.
    pub fn init(root: &Path, force: bool) -> Result<Vec<PathBuf>> {
        let existing: Vec<PathBuf> = STARTER_FILES
            .iter()
            .map(|(rel, _)| root.join(rel))
            .filter(|p| p.exists())
            .collect();
        if !existing.is_empty() && !force {
            let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::InvalidArgument(format!(
                "refusing to overwrite existing files ({}); use --force to overwrite them",
                list.join(", ")
            )));
        }
        let mut written = Vec::new();
        for (rel, contents) in STARTER_FILES {
            let path = root.join(rel);
            write_file(&path, contents.as_bytes())?;
            written.push(path);
        }
        let secrets = root.join(SECRETS_PATH);
        if secrets.exists() {
            tracing::info!(file = %secrets.display(), "keeping the existing secrets file");
        } else {
            // A new project protects its devices from the start: a random
            // password and signing key, readable by the owner only.
            let fresh = serde_json::json!({
                OTA_PASSWORD_KEY: crate::auth::random_key_hex()[..24].to_string(),
                SIGNING_KEY_KEY: crate::auth::random_key_hex(),
            });
            let mut bytes = serde_json::to_vec_pretty(&fresh).expect("json");
            bytes.push(b'\n');
            write_atomic(&secrets, &bytes, true)?;
            written.push(secrets);
        }
        for entry in GITIGNORED {
            if let Some(gitignore) = ensure_gitignored(root, entry)? {
                if !written.contains(&gitignore) {
                    written.push(gitignore);
                }
            }
        }
        tracing::info!(root = %root.display(), files = written.len(), "wrote starter project");
        Ok(written)
    }

    /// Store a new OTA password in `config/.ota.secrets.json` (empty clears
    /// it), keeping every other key of that file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the secrets file is malformed; [`Error::Io`]
    /// when it cannot be written.
    pub fn store_password(&self, password: &str) -> Result<()> {
        self.store_secrets(&[(OTA_PASSWORD_KEY, password)])
    }

    /// Set keys of `config/.ota.secrets.json` (an empty value clears one),
    /// keeping every other key of that file. The file is written atomically
    /// and, on Unix, readable by its owner only.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the secrets file is malformed; [`Error::Io`]
    /// when it cannot be written.
    pub fn store_secrets(&self, values: &[(&str, &str)]) -> Result<()> {
        let path = self.secrets_path();
        let mut secrets = read_json_object(&path)?.unwrap_or_default();
        for (key, value) in values {
            secrets.insert(key.to_string(), Value::String(value.to_string()));
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(secrets)).expect("json");
        bytes.push(b'\n');
        write_atomic(&path, &bytes, true)
    }

    /// Path of `config/ota.json` in this project.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(DEVICE_CONFIG_PATH)
    }

    /// Path of `config/.ota.secrets.json` in this project.
    pub fn secrets_path(&self) -> PathBuf {
        self.root.join(SECRETS_PATH)
    }

    /// Where pushes keep the last known manifest of each device
    /// ([`crate::device::PushOptions::manifest_cache`]): `.uota/manifests/`.
    pub fn manifest_cache_dir(&self) -> PathBuf {
        self.root.join(MANIFEST_CACHE_DIR)
    }

    /// The `config/ota.json` bytes to install on a device: the merged config
    /// (secrets-file overrides such as WiFi credentials included) without
    /// `otaPassword` and `signingKey`. Compact JSON.
    pub fn device_config_json(&self) -> Vec<u8> {
        let mut config = self.config.clone();
        config.extra.remove(OTA_PASSWORD_KEY);
        config.extra.remove(SIGNING_KEY_KEY);
        serde_json::to_vec(&config).expect("a config always serializes")
    }
}

/// Read a JSON object from `path`; `Ok(None)` when the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "not valid UTF-8".into(),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: format!("malformed JSON: {e}"),
    })?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        other => Err(Error::Config {
            path: path.to_path_buf(),
            message: format!("expected a JSON object, found {}", json_type(&other)),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Remove `key` from `map`; a non-empty string is the secret.
fn take_secret(
    map: &mut Map<String, Value>,
    key: &str,
    source_of: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<String>> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::Config {
            path: source_of(key),
            message: format!("\"{key}\" must be a string, found {}", json_type(&other)),
        }),
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))
}

/// Write a file atomically (a temporary sibling synced, then renamed over
/// it); with `private`, readable by its owner only on Unix (secrets).
pub(crate) fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    use std::io::Write;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io(parent, e))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Make sure `root/.gitignore` lists `entry`; returns its path when it was written.
fn ensure_gitignored(root: &Path, entry: &str) -> Result<Option<PathBuf>> {
    let path = root.join(".gitignore");
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let listed = current.lines().any(|line| {
        let line = line.trim();
        line == entry || line.strip_prefix('/') == Some(entry)
    });
    if listed {
        return Ok(None);
    }
    let mut updated = current;
    if !updated.is_empty() && !updated.ends_with('\n') {
        updated.push('\n');
    }
    updated.push_str(entry);
    updated.push('\n');
    write_file(&path, updated.as_bytes())?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn defaults_match_micro_ota() {
        let c: ProjectConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ProjectConfig::default());
        assert_eq!(c.version, "1.0.0");
        assert_eq!(c.port, 2018);
        assert_eq!(c.transports, ["wifi_tcp"]);
        assert_eq!(c.fast_ota_files, ["app/**", "main.py", "config/**"]);
        assert_eq!(c.full_ota_files, ["**"]);
        assert_eq!(c.excluded_files, [".git/**", "*.zip", "dist/**"]);
    }

    #[test]
    fn unknown_keys_round_trip() {
        let text = r#"{"version":"2.0","port":3000,"remoteioPort":0,"legacy":true,
            "serialUartId":1,"custom":{"nested":[1,2]},"ssid":"net"}"#;
        let c: ProjectConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.remoteio_port, 0);
        assert_eq!(c.legacy, Some(true));
        assert_eq!(c.extra["serialUartId"], 1);
        let back: Value = serde_json::to_value(&c).unwrap();
        let orig: Value = serde_json::from_str(text).unwrap();
        for (k, v) in orig.as_object().unwrap() {
            assert_eq!(&back[k], v, "{k}");
        }
        let again: ProjectConfig = serde_json::from_value(back).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn load_merges_secrets_over_config() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(
            root,
            DEVICE_CONFIG_PATH,
            r#"{"version":"1.2.3","hostname":"board.local","password":"","otaPassword":"","mystery":1}"#,
        );
        write(
            root,
            SECRETS_PATH,
            r#"{"otaPassword":"pw","signingKey":"key","password":"wifi-secret","port":2020}"#,
        );
        let p = Project::load(root).unwrap();
        assert_eq!(p.root, root);
        assert_eq!(p.config.version, "1.2.3");
        assert_eq!(p.config.hostname, "board.local");
        assert_eq!(p.config.password, "wifi-secret");
        assert_eq!(p.config.port, 2020);
        assert_eq!(p.config.extra.get("mystery"), Some(&Value::from(1)));
        assert!(!p.config.extra.contains_key(OTA_PASSWORD_KEY));
        assert_eq!(p.secrets.ota_password, Some(Password::new("pw")));
        assert_eq!(p.secrets.signing_key, Some(SigningKey::new("key")));
        assert!(!format!("{p:?}").contains("\"pw\""));

        let device: Value = serde_json::from_slice(&p.device_config_json()).unwrap();
        assert_eq!(device["version"], "1.2.3");
        assert_eq!(device["password"], "wifi-secret");
        assert_eq!(device["port"], 2020);
        assert!(device.get(OTA_PASSWORD_KEY).is_none());
        assert!(device.get(SIGNING_KEY_KEY).is_none());
        let text = String::from_utf8(p.device_config_json()).unwrap();
        assert!(!text.contains("\"key\"") && !text.contains("signingKey"));
    }

    #[test]
    fn load_without_secrets_file_and_empty_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), DEVICE_CONFIG_PATH, r#"{"signingKey": ""}"#);
        let p = Project::load(tmp.path()).unwrap();
        assert!(p.secrets.is_empty());
        assert_eq!(p.config, ProjectConfig::default());
        write(
            tmp.path(),
            SECRETS_PATH,
            r#"{"otaPassword": "", "signingKey": null}"#,
        );
        assert!(Project::load(tmp.path()).unwrap().secrets.is_empty());
    }

    #[test]
    fn load_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let err = Project::load(root).unwrap_err();
        match &err {
            Error::Config { path, message } => {
                assert_eq!(path, &root.join(DEVICE_CONFIG_PATH));
                assert!(message.contains("uota init"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        write(root, DEVICE_CONFIG_PATH, "{\"port\": 2018,,}");
        let err = Project::load(root).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, message } if path.ends_with("config/ota.json") && message.contains("line 1")),
            "{err}"
        );

        write(root, DEVICE_CONFIG_PATH, "[1]");
        let err = Project::load(root).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");

        write(root, DEVICE_CONFIG_PATH, r#"{"port": "x"}"#);
        let err = Project::load(root).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, message } if path.ends_with("config/ota.json") && message.contains("\"port\"")),
            "{err}"
        );

        write(root, DEVICE_CONFIG_PATH, r#"{"port": 2018}"#);
        write(root, SECRETS_PATH, r#"{"port": 99999}"#);
        let err = Project::load(root).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, message } if path.ends_with(SECRETS_PATH) && message.contains("\"port\"")),
            "{err}"
        );

        write(root, SECRETS_PATH, r#"{"signingKey": 5}"#);
        let err = Project::load(root).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, .. } if path.ends_with(SECRETS_PATH)),
            "{err}"
        );

        write(root, SECRETS_PATH, "{");
        let err = Project::load(root).unwrap_err();
        assert!(matches!(&err, Error::Config { path, .. } if path.ends_with(SECRETS_PATH)));
    }

    #[test]
    fn init_writes_a_loadable_project() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proj");
        let written = Project::init(&root, false).unwrap();
        for rel in [
            "main.py",
            "app/__init__.py",
            "app/counter.py",
            DEVICE_CONFIG_PATH,
            SECRETS_PATH,
            ".gitignore",
        ] {
            assert!(
                written.contains(&root.join(rel)),
                "{rel} not in {written:?}"
            );
            assert!(root.join(rel).is_file());
        }
        let secrets: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(SECRETS_PATH)).unwrap())
                .unwrap();
        let password = secrets["otaPassword"].as_str().unwrap();
        let key = secrets["signingKey"].as_str().unwrap();
        assert!(password.len() >= 16 && key.len() == 64, "{secrets}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.join(SECRETS_PATH))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "secrets readable by others: {mode:o}");
        }
        // A second project gets other secrets.
        let other = tmp.path().join("other");
        Project::init(&other, false).unwrap();
        let again: Value =
            serde_json::from_str(&std::fs::read_to_string(other.join(SECRETS_PATH)).unwrap())
                .unwrap();
        assert_ne!(again["otaPassword"], secrets["otaPassword"]);
        assert_ne!(again["signingKey"], secrets["signingKey"]);
        let gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
        assert_eq!(
            gitignore,
            "config/.ota.secrets.json\n.uota_cache.json\n.uota/\nvdev/\n"
        );

        let p = Project::load(&root).unwrap();
        assert_eq!(p.config.version, "1.0.0");
        assert_eq!(p.config.hostname, "127.0.0.1");
        assert_eq!(p.config.port, 2018);
        assert!(p.secrets.ota_password.is_some() && p.secrets.signing_key.is_some());
        // What a push takes from it: see `crate::bundle`.
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "main.py", "mine");
        write(root, ".gitignore", "target");
        write(root, SECRETS_PATH, r#"{"otaPassword": "keep-me"}"#);
        let err = Project::init(root, false).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("main.py")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("main.py")).unwrap(),
            "mine"
        );
        assert!(!root.join("app/counter.py").exists());

        let written = Project::init(root, true).unwrap();
        assert_ne!(
            std::fs::read_to_string(root.join("main.py")).unwrap(),
            "mine"
        );
        // The secrets file survives a forced init.
        assert!(!written.contains(&root.join(SECRETS_PATH)));
        assert!(std::fs::read_to_string(root.join(SECRETS_PATH))
            .unwrap()
            .contains("keep-me"));
        assert_eq!(
            std::fs::read_to_string(root.join(".gitignore")).unwrap(),
            "target\nconfig/.ota.secrets.json\n.uota_cache.json\n.uota/\nvdev/\n"
        );
        // A second run does not add the line twice.
        Project::init(root, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(".gitignore")).unwrap(),
            "target\nconfig/.ota.secrets.json\n.uota_cache.json\n.uota/\nvdev/\n"
        );
    }

    #[test]
    fn starter_config_is_micro_ota_shaped() {
        let (_, text) = STARTER_FILES
            .iter()
            .find(|(p, _)| *p == DEVICE_CONFIG_PATH)
            .unwrap();
        let v: Value = serde_json::from_str(text).unwrap();
        assert!(v.get(OTA_PASSWORD_KEY).is_none() && v.get(SIGNING_KEY_KEY).is_none());
        let c: ProjectConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.fast_ota_files, default_fast_ota_files());
        assert_eq!(c.full_ota_files, default_full_ota_files());
        assert_eq!(c.excluded_files, default_excluded_files());
        assert!(c.extra.is_empty(), "unexpected keys {:?}", c.extra);
    }
}
