//! The `uota` command line (feature `cli`).
//!
//! One implementation serves cargo users (`src/bin/uota.rs`) and pip users
//! (the Python package's console script calls [`run`] through the extension).

mod board;
mod fleet;
mod key;
mod output;
mod remoteio;
mod terminal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Password, SigningKey};
use crate::bundle::Bundle;
use crate::config::Project;
use crate::device::{
    ConnectOptions, Device, Link, LinkChoice, LinkKind, MicroOtaMethod, ProtocolChoice, PushOptions,
};
use crate::error::{Error, Result};
use crate::protocol::PushMode;
use crate::sim::{self, RuntimeCode, SimOptions, Storage};
use output::Output;

/// Deploy MicroPython applications to devices, over the air and over USB.
#[derive(Debug, Parser)]
#[command(name = "uota", disable_version_flag = true, about, long_about = None)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a starter project (config/ota.json, main.py, app/) in the project folder.
    Init {
        /// Project folder (default: the current folder).
        #[arg(long)]
        project: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a virtual device: the MicroPython unix port running the uota runtime.
    Sim(SimArgs),
    /// Push the fast set (fastOtaFiles) without removing other files
    /// (`--all`: to every device of the fleet, in waves).
    Fast(PushArgs),
    /// Push the full release (fastOtaFiles + fullOtaFiles) and remove files
    /// that left it (`--all`: to every device of the fleet, in waves).
    Full(PushArgs),
    /// List the fleet's devices with what each says in its hello, or find
    /// devices with a scan of an address range.
    List(fleet::ListArgs),
    /// A device's release state (version, pending or confirmed, last
    /// rollback, boots); `--all`: every device of the fleet.
    Status(fleet::StatusArgs),
    /// RemoteIO: stream the device's output, call its app's handlers.
    #[command(subcommand)]
    Remoteio(remoteio::RemoteioCommand),
    /// Show the version of the device's active release.
    Version(Target),
    /// Show what the device reports about itself.
    Info(Target),
    /// Check that the device answers.
    Ping(Target),
    /// List a device folder.
    Ls {
        #[command(flatten)]
        target: Target,
        /// Device folder.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a device file to a local file (or stdout with `-`).
    Get {
        #[command(flatten)]
        target: Target,
        /// Device path.
        path: String,
        /// Local destination (default: the file's name in the current folder).
        dest: Option<PathBuf>,
    },
    /// Remove a device file.
    Rm {
        #[command(flatten)]
        target: Target,
        /// Device path.
        path: String,
    },
    /// Reset the device.
    Reset(Target),
    /// Remove the app from the device, keeping the runtime, /config and /data.
    Wipe(Target),
    /// Install the uota runtime on a board over USB serial (then it boots into uota).
    Bootstrap(board::BootstrapArgs),
    /// What MicroPython a board on USB serial runs (cached in .uota_cache.json).
    Board(board::Port),
    /// Files on a board over its USB serial REPL (no runtime needed).
    #[command(subcommand)]
    Fs(board::FsCommand),
    /// The board's REPL in this terminal over USB serial (Ctrl-] leaves).
    Terminal(board::Port),
    /// Create, derive and rotate release-signing keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Show the device's release-number floor, or set it (lower or higher) in
    /// an authenticated session: the way out of a floor set too high.
    Floor {
        #[command(flatten)]
        target: Target,
        /// The new floor (at most 2^53).
        release: Option<u64>,
    },
    /// Change the device's OTA password and store it in config/.ota.secrets.json.
    Passwd {
        #[command(flatten)]
        target: Target,
        /// The new password (read from stdin when omitted; empty clears it).
        new_password: Option<String>,
    },
}

/// Which device to talk to and how.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The whole link: tcp://HOST[:PORT], serial:///dev/ttyUSB0[?baud=N] or
    /// serial://auto (instead of --host, --port, --transport and --baud).
    #[arg(long)]
    link: Option<Link>,
    /// Device address (default: `hostname` from config/ota.json).
    #[arg(long)]
    host: Option<String>,
    /// OTA port number (default: `port` from config/ota.json, else 2018), or
    /// a serial port path (`/dev/ttyUSB0`, `COM3`) to work over USB.
    #[arg(long)]
    port: Option<String>,
    /// Link: tcp, serial, or auto (serial when --port names a serial port).
    /// `serial` without a port uses `serialPort` from the config, else the
    /// one USB-serial board attached.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcp", "serial"])]
    transport: String,
    /// Serial baud rate (default: `serialBaud` from the config, else 115200).
    #[arg(long)]
    baud: Option<u32>,
    /// Project folder (default: the current folder).
    #[arg(long)]
    project: Option<PathBuf>,
    /// OTA password (default: `otaPassword` from config/.ota.secrets.json).
    #[arg(long, env = "UOTA_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Protocol: auto, uota or micro-ota.
    #[arg(long, default_value = "auto", value_parser = ["auto", "uota", "micro-ota"])]
    protocol: String,
}

#[derive(Debug, Args)]
struct PushArgs {
    #[command(flatten)]
    target: Target,
    /// Release version (default: `version` from config/ota.json).
    #[arg(long = "version")]
    release_version: Option<String>,
    /// Do not reset the device after the commit.
    #[arg(long)]
    no_reset: bool,
    /// Allow replacing the device runtime (boot.py, lib/uota/).
    #[arg(long)]
    runtime: bool,
    /// For micro-ota devices: use the older start_ota session instead of stream_ota.
    #[arg(long, alias = "legacy-session")]
    micro_ota_session: bool,
    /// Send every file, even those the device already has.
    #[arg(long)]
    resend: bool,
    /// Send file bytes uncompressed.
    #[arg(long)]
    no_compress: bool,
    /// Release number to sign (default: `release` from config/ota.json, else
    /// one above the highest the device has accepted).
    #[arg(long)]
    release: Option<u64>,
    /// Sign the release as a deliberate rollback to a lower release number.
    #[arg(long)]
    rollback: bool,
    /// Return once the commit is acknowledged, without waiting for the
    /// device to answer again after its reset.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the device to answer again after its reset.
    #[arg(long, default_value_t = 60.0)]
    wait_timeout: f64,
    /// A literal path in fastOtaFiles/fullOtaFiles that matches no file is
    /// an error (a warning otherwise).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    fleet: fleet::FleetArgs,
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Host folder that is the device's filesystem.
    #[arg(long, required_unless_present = "image")]
    root: Option<PathBuf>,
    /// A littlefs2 image file to use as the filesystem instead of a folder.
    #[arg(long, conflicts_with = "root")]
    image: Option<PathBuf>,
    /// Image size in bytes for a new image (suffixes k and M allowed).
    #[arg(long, default_value = "1441792")]
    image_size: String,
    /// With --root: the flash size the device reports (suffixes k and M
    /// allowed); its free space is this less what the folder holds.
    #[arg(long, default_value = "1441792", conflicts_with = "image")]
    flash_size: String,
    /// Loopback address to listen on (default: the project's `hostname`
    /// when it is a loopback address, else 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// OTA port (default: the project's `port` with its hostname, else 2018).
    #[arg(long)]
    port: Option<u16>,
    /// Password to install on a new device.
    #[arg(long)]
    password: Option<String>,
    /// Signing key to install on a new device.
    #[arg(long)]
    signing_key: Option<String>,
    /// Accept micro-ota's legacy push sessions.
    #[arg(long)]
    legacy: bool,
    /// MicroPython heap size, e.g. 256k.
    #[arg(long)]
    heap: Option<String>,
    /// Install the runtime on a new device as .py source (default: .mpy
    /// when an mpy-cross of the interpreter's bytecode version is found).
    #[arg(long, conflicts_with = "mpy")]
    py: bool,
    /// Install the runtime on a new device as .mpy (an error without a
    /// matching mpy-cross).
    #[arg(long)]
    mpy: bool,
    /// A board on a serial port instead: the REPL on a pseudo-terminal whose
    /// path is printed (the runtime's WiFi server still listens on --host:--port).
    #[arg(long)]
    serial: bool,
    /// With --serial: limit the link to this UART baud rate (8N1).
    #[arg(long, requires = "serial")]
    baud: Option<u32>,
    /// With --serial: a bare board, without the uota runtime (for `uota bootstrap`).
    #[arg(long, requires = "serial")]
    bare: bool,
    /// With --serial: log every byte crossing the link to this file
    /// (`H>D` host to device, `D>H` back; seconds since start), to debug a host tool.
    #[arg(long, requires = "serial", value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// Parse `args` (including the program name) and run the command; returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            // With --json, a usage error is JSON too (help and --version are not errors).
            if e.use_stderr() && args.iter().any(|a| a == "--json") {
                let message = e.kind().to_string();
                let detail = e.to_string();
                let first = detail.lines().next().unwrap_or(&message);
                let first = first.strip_prefix("error: ").unwrap_or(first);
                outln_json(&serde_json::json!({
                    "ok": false,
                    "error": {"kind": "Usage", "message": first},
                }));
                return 2;
            }
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.verbose);
    let out = Output::new(cli.json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&Error::io("<tokio runtime>", e));
            return 1;
        }
    };
    match rt.block_on(execute(cli.command, &out)) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            exit_code(&e)
        }
    }
}

fn outln_json(v: &serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

fn exit_code(e: &Error) -> i32 {
    use crate::error::ErrorKind::*;
    match e.kind() {
        Auth => 3,
        SignatureMismatch | HashMismatch | ReleaseRefused => 4,
        Timeout | Transport => 5,
        InterpreterMissing => 6,
        Cancelled => 130,
        _ => 1,
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UOTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn project_root(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(|| PathBuf::from("."))
}

/// The project, when the folder has one; commands that only talk to a device work without.
fn try_project(root: &Path) -> Result<Option<Project>> {
    if root.join("config/ota.json").is_file() {
        Project::load(root).map(Some)
    } else {
        Ok(None)
    }
}

/// Where the target is: a TCP address or a serial port.
pub(crate) fn link(target: &Target, project: &Option<Project>) -> Result<Link> {
    let choice = LinkChoice {
        link: target.link.clone(),
        kind: match target.transport.as_str() {
            "serial" => LinkKind::Serial,
            "tcp" => LinkKind::Tcp,
            _ => LinkKind::Auto,
        },
        host: target.host.clone(),
        port: target.port.clone(),
        baud: target.baud,
    };
    choice.resolve(project.as_ref().map(|p| &p.config))
}

pub(crate) async fn connect(target: &Target) -> Result<(Device, Option<Project>)> {
    let (opts, link, project) = connect_setup(target)?;
    let dev = Device::open(&link, opts).await?;
    Ok((dev, project))
}

/// How to reach the target: options (secrets from the project), the link,
/// and the project when the folder has one.
fn connect_setup(target: &Target) -> Result<(ConnectOptions, Link, Option<Project>)> {
    let project = try_project(&project_root(&target.project))?;
    let opts = connect_options(target, project.as_ref())?;
    let link = link(target, &project)?;
    Ok((opts, link, project))
}

/// How to talk to the target (secrets from the project, when there is one).
fn connect_options(target: &Target, project: Option<&Project>) -> Result<ConnectOptions> {
    if !(target.timeout > 0.0 && target.timeout.is_finite()) {
        return Err(Error::InvalidArgument(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let mut opts = match project {
        Some(p) => ConnectOptions::for_project(p)?,
        None => ConnectOptions::default(),
    };
    opts.timeout = Duration::from_secs_f64(target.timeout);
    match &target.password {
        Some(p) if !p.is_empty() => opts.password = Some(Password::new(p.clone())),
        Some(_) => opts.password = None,
        None => {}
    }
    // --protocol wins over the project's "protocol" key; auto never sends a
    // plaintext password.
    if target.protocol != "auto" {
        opts.protocol = ProtocolChoice::parse(&target.protocol)?;
    }
    Ok(opts)
}

/// Run a command; its exit code (fleet commands say more than success).
async fn execute(command: Command, out: &Output) -> Result<i32> {
    match command {
        Command::List(args) => fleet::list(args, out).await,
        Command::Status(args) => fleet::status(args, out).await,
        Command::Remoteio(cmd) => remoteio::run(cmd, out).await,
        Command::Fast(args) if args.fleet.all => fleet::rollout(&args, PushMode::Fast, out).await,
        Command::Full(args) if args.fleet.all => fleet::rollout(&args, PushMode::Full, out).await,
        other => execute_one(other, out).await.map(|()| 0),
    }
}

async fn execute_one(command: Command, out: &Output) -> Result<()> {
    match command {
        Command::List(_) | Command::Status(_) | Command::Remoteio(_) => {
            unreachable!("execute runs these")
        }
        Command::Init { project, force } => {
            let root = project_root(&project);
            let written = Project::init(&root, force)?;
            out.list("created", written.iter().map(|p| p.display().to_string()));
            let project = Project::load(&root)?;
            if let Some(key) = &project.secrets.signing_key {
                out.value(
                    "signing_key",
                    &format!(
                        "signing key {} (in {}, owner-only; devices provisioned from this project take releases signed with it)",
                        crate::auth::key_fingerprint(key.as_bytes()),
                        project.secrets_path().display()
                    ),
                );
            }
            if project.secrets.ota_password.is_some() {
                out.value(
                    "password",
                    "a random OTA password is in the secrets file (it never leaves this machine in plaintext)",
                );
            }
            Ok(())
        }
        Command::Sim(args) => run_sim(args, out).await,
        Command::Key(cmd) => key::run(cmd, out).await,
        Command::Terminal(args) => terminal::run(args, out).await,
        Command::Bootstrap(args) => board::run_bootstrap(args, out).await,
        Command::Board(port) => board::board_info(port, out).await,
        Command::Fs(cmd) => board::run_fs(cmd, out).await,
        Command::Fast(args) => push(args, PushMode::Fast, out).await,
        Command::Full(args) => push(args, PushMode::Full, out).await,
        Command::Version(t) => {
            let (mut dev, _) = connect(&t).await?;
            let v = dev.version().await?;
            dev.close().await?;
            out.value("version", &v);
            Ok(())
        }
        Command::Info(t) => {
            let (mut dev, _) = connect(&t).await?;
            let info = dev.info().await?;
            dev.close().await?;
            out.json_or_lines(&info);
            Ok(())
        }
        Command::Ping(t) => {
            let (mut dev, _) = connect(&t).await?;
            let rtt = dev.ping().await?;
            dev.close().await?;
            let ms = (rtt.as_secs_f64() * 10_000.0).round() / 10.0;
            out.number(
                "pong_ms",
                ms,
                &format!("pong from {} in {ms:.1} ms", dev_target(&t)),
            );
            Ok(())
        }
        Command::Ls { target, path } => {
            let (mut dev, _) = connect(&target).await?;
            let entries = dev.ls(&path).await?;
            dev.close().await?;
            out.entries(&entries);
            Ok(())
        }
        Command::Get { target, path, dest } => {
            let (mut dev, _) = connect(&target).await?;
            let dest = board::local_dest(&path, dest);
            if dest.as_os_str() == "-" {
                let mut stdout = tokio::io::stdout();
                dev.get_to(&path, &mut stdout).await?;
                dev.close().await?;
                return Ok(());
            }
            // Stream into a sibling and rename it into place once complete.
            let part = dest.with_file_name(format!(
                ".{}.part",
                dest.file_name().and_then(|n| n.to_str()).unwrap_or("get")
            ));
            let mut file = tokio::fs::File::create(&part)
                .await
                .map_err(|e| Error::io(&part, e))?;
            let got = dev.get_to(&path, &mut file).await;
            drop(file);
            let size = match got {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            };
            std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
            dev.close().await?;
            out.value("written", &format!("{} ({size} bytes)", dest.display()));
            Ok(())
        }
        Command::Floor { target, release } => {
            let (mut dev, _) = connect(&target).await?;
            if let Some(n) = release {
                dev.set_floor(n).await?;
                dev.close().await?;
                out.value("floor", &n.to_string());
            } else {
                let n = dev.highest_release();
                dev.close().await?;
                out.value("floor", &n.to_string());
            }
            Ok(())
        }
        Command::Rm { target, path } => {
            let (mut dev, _) = connect(&target).await?;
            dev.rm(&path).await?;
            dev.close().await?;
            out.value("removed", &path);
            Ok(())
        }
        Command::Reset(t) => {
            let (mut dev, _) = connect(&t).await?;
            dev.reset().await?;
            out.value("reset", "ok");
            Ok(())
        }
        Command::Wipe(t) => {
            let (mut dev, _) = connect(&t).await?;
            dev.wipe().await?;
            dev.close().await?;
            out.value("wiped", "ok");
            Ok(())
        }
        Command::Passwd {
            target,
            new_password,
        } => {
            let new = match new_password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::io("<stdin>", e))?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let (mut dev, project) = connect(&target).await?;
            let new_pw = (!new.is_empty()).then(|| Password::new(new.clone()));
            dev.passwd(new_pw.as_ref()).await?;
            dev.close().await?;
            if let Some(p) = project {
                p.store_password(&new)?;
            }
            out.value(
                "password",
                if new.is_empty() { "cleared" } else { "changed" },
            );
            Ok(())
        }
    }
}

async fn push(args: PushArgs, mode: PushMode, out: &Output) -> Result<()> {
    let root = project_root(&args.target.project);
    let project = Project::load(&root)?;
    // mpyFiles: compiled for the board the project last saw, when it can be.
    let mut bundle = Bundle::for_push(&project, mode, args.strict)?;
    if let Some(v) = &args.release_version {
        bundle.set_version(v.clone());
    }
    let (mut copts, link, _) = connect_setup(&args.target)?;
    let mut dev = Device::open(&link, copts.clone()).await?;
    let device_id = dev.device_id().to_string();
    let mut opts = push_options(&args, &project, mode);
    let report = match push_cancellable(&mut dev, &bundle, &opts, &args.target, out).await {
        // Between `uota key rotate` and `uota key promote`, a rotated device
        // holds the next key: sign with it.
        Err(Error::SignatureMismatch(msg)) => {
            let project_key = project.secrets.key_for_device(&device_id);
            match project.secrets.next_key_for_device(&device_id) {
                Some(next) if Some(&next) != project_key.as_ref() => {
                    tracing::warn!(
                        "{} does not hold the project's signing key but the next one (rotated with `uota key rotate`, not promoted yet): signing with it",
                        dev.target()
                    );
                    drop(dev);
                    copts.signing_key = Some(next.clone());
                    copts.fleet_key = None;
                    opts.signing_key = Some(next);
                    opts.fleet_key = None;
                    dev = Device::open(&link, copts).await?;
                    push_cancellable(&mut dev, &bundle, &opts, &args.target, out).await?
                }
                _ => {
                    let which = match &project_key {
                        Some(k) => format!(
                            "; this project signs for it with key {} (config/.ota.secrets.json), and the device expects another: the key it was provisioned with, or one `uota key rotate` installed",
                            crate::auth::key_fingerprint(k.as_bytes())
                        ),
                        None => String::new(),
                    };
                    return Err(Error::SignatureMismatch(format!("{msg}{which}")));
                }
            }
        }
        other => other?,
    };
    dev.close().await?;
    out.push_report(&report);
    Ok(())
}

/// The push options the command line and the project give.
fn push_options(args: &PushArgs, project: &Project, mode: PushMode) -> PushOptions {
    let project_opts = PushOptions::for_project(project, mode);
    PushOptions {
        reset: !args.no_reset,
        runtime: args.runtime,
        release: args.release.or(project_opts.release),
        rollback: args.rollback,
        micro_ota_method: if args.micro_ota_session {
            MicroOtaMethod::Session
        } else {
            MicroOtaMethod::Stream
        },
        delta: !args.resend,
        compress: !args.no_compress,
        wait: (!args.no_wait).then(|| Duration::from_secs_f64(args.wait_timeout.max(0.0))),
        ..project_opts
    }
}

/// Run a push with its progress bar; Ctrl-C cancels it: the connection is
/// reset so that nothing queued (a commit) reaches the device, which keeps
/// what it staged.
async fn push_cancellable(
    dev: &mut Device,
    bundle: &Bundle,
    opts: &PushOptions,
    target: &Target,
    out: &Output,
) -> Result<crate::device::PushReport> {
    let mut bar = out.progress();
    let mut on_event = |ev: &crate::device::PushEvent| bar.update(ev);
    let pushed = tokio::select! {
        r = dev.push_bundle(bundle, opts, &mut on_event) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    bar.finish();
    match pushed {
        Some(r) => r,
        None => {
            dev.cancel();
            Err(cancelled_push(target, &bundle.manifest().version).await)
        }
    }
}

/// How the target was named, for messages.
fn dev_target(t: &Target) -> String {
    match (&t.host, &t.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => "the device".into(),
    }
}

/// After Ctrl-C: what the device runs now, for the message.
async fn cancelled_push(target: &Target, version: &str) -> Error {
    let running = match connect(target).await {
        Ok((mut dev, _)) => {
            let v = dev.version().await.ok();
            let _ = dev.close().await;
            v
        }
        Err(_) => None,
    };
    let state = match running {
        Some(v) if v == version => format!(
            "the device had already committed {v} before the cancel reached it"
        ),
        Some(v) => format!(
            "nothing was committed: the device still runs {v}; what it staged is kept, and the next push of {version} resumes it"
        ),
        None => "the device did not answer afterwards; check it with `uota version`".into(),
    };
    Error::Cancelled(format!("push cancelled (Ctrl-C); {state}"))
}

/// A duration given in seconds on the command line: a finite number, at
/// least zero when `zero_ok`, else above zero. `name` is the flag, for the
/// error.
pub(crate) fn seconds_arg(name: &str, v: f64, zero_ok: bool) -> Result<Duration> {
    let ok = v.is_finite() && if zero_ok { v >= 0.0 } else { v > 0.0 };
    if ok {
        return Ok(Duration::from_secs_f64(v));
    }
    let range = if zero_ok { "0 or more" } else { "above 0" };
    Err(Error::InvalidArgument(format!(
        "{name} must be a number of seconds, {range}"
    )))
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("bad size {s:?}")))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < sim::BLOCK_SIZE as f64 || bytes > 1e15 {
        return Err(Error::InvalidArgument(format!(
            "bad size {s:?}: give bytes (at least 4096), or k or M, e.g. 1441792, 512k, 4M"
        )));
    }
    Ok(bytes as u64 / sim::BLOCK_SIZE * sim::BLOCK_SIZE)
}

/// `uota sim --serial`: a serial virtual device until Ctrl-C.
#[cfg(unix)]
async fn run_serial_sim(
    opts: SimOptions,
    baud: Option<u32>,
    bare: bool,
    trace: Option<PathBuf>,
    out: &Output,
) -> Result<()> {
    // SIGINT, SIGTERM and SIGHUP stop the device (and its interpreter).
    let mut signals = sim::StopSignals::new()?;
    opts.check_loopback()?;
    if !bare {
        // The runtime's TCP server listens on --host:--port too.
        sim::check_port_free(&opts.host, opts.port)?;
        if sim::provision(&opts).await? {
            tracing::info!("installed the uota runtime on the virtual device");
        }
    }
    if let Storage::Folder(root) = &opts.storage {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    }
    let mut serial = sim::SerialSimOptions::booting(&opts);
    serial.baud = baud;
    serial.trace = trace;
    let dev = tokio::select! {
        dev = sim::VirtualSerialDevice::start(serial) => dev?,
        _ = signals.recv() => return Ok(()),
    };
    out.value("serial", &dev.path().display().to_string());
    let sig = signals.recv().await;
    tracing::info!(signal = sig, "serial virtual device: stopping");
    dev.stop().await
}

#[cfg(not(unix))]
async fn run_serial_sim(
    _: SimOptions,
    _: Option<u32>,
    _: bool,
    _: Option<PathBuf>,
    _: &Output,
) -> Result<()> {
    Err(Error::InvalidArgument(
        "serial virtual devices need a Unix pseudo-terminal".into(),
    ))
}

async fn run_sim(args: SimArgs, out: &Output) -> Result<()> {
    let storage = match (&args.root, &args.image) {
        (_, Some(img)) => Storage::Image {
            path: img.clone(),
            size: parse_size(&args.image_size)?,
        },
        (Some(root), None) => Storage::Folder(root.clone()),
        (None, None) => unreachable!("clap requires --root or --image"),
    };
    let project = try_project(Path::new("."))?;
    // Inside a project, the device listens where the project pushes to
    // (when that is a loopback address), so `uota full` reaches it as is.
    let project_addr = project.as_ref().and_then(|p| {
        let ip: std::net::IpAddr = p.config.hostname.parse().ok()?;
        ip.is_loopback()
            .then(|| (p.config.hostname.clone(), p.config.port))
    });
    let (host, port) = match (args.host, args.port, project_addr) {
        (Some(h), Some(p), _) => (h, p),
        (Some(h), None, _) => (h, 2018),
        (None, Some(p), _) => ("127.0.0.1".to_string(), p),
        (None, None, Some((h, p))) => (h, p),
        (None, None, None) => ("127.0.0.1".to_string(), 2018),
    };
    let existing = match &storage {
        Storage::Folder(root) => root.join("lib/uota").exists(),
        Storage::Image { path, .. } => path.exists(),
    };
    if existing && (args.password.is_some() || args.signing_key.is_some()) {
        tracing::warn!(
            "the device in {} already exists: --password/--signing-key only provision a new one; its own secrets stay (start from an empty folder or image, or change them with `uota passwd` / `uota key rotate`)",
            match &storage {
                Storage::Folder(root) => root.display().to_string(),
                Storage::Image { path, .. } => path.display().to_string(),
            }
        );
    }
    let mut opts = SimOptions::folder(".", &host, port);
    opts.storage = storage;
    opts.flash_size = Some(parse_size(&args.flash_size)?);
    opts.password = args.password.filter(|p| !p.is_empty()).map(Password::new);
    opts.signing_key = args
        .signing_key
        .filter(|k| !k.is_empty())
        .map(SigningKey::new);
    // Run inside a project, a new device is provisioned from the project's
    // secrets, so the project's pushes reach it authenticated and signed.
    if let Some(project) = &project {
        if opts.password.is_none() {
            opts.password = project.secrets.ota_password.clone();
        }
        if opts.signing_key.is_none() {
            let id = format!("sim-{host}-{port}");
            opts.signing_key = project
                .secrets
                .signing_key
                .clone()
                .or_else(|| project.secrets.fleet_key.as_ref().map(|f| f.derive(&id)));
            opts.env.push(("UOTA_SIM_ID".into(), id));
        }
    }
    opts.legacy = args.legacy;
    opts.heap_size = args.heap;
    opts.runtime_code = if args.py {
        RuntimeCode::Source
    } else if args.mpy {
        RuntimeCode::Bytecode
    } else {
        RuntimeCode::Auto
    };
    if args.serial {
        return run_serial_sim(opts, args.baud, args.bare, args.trace.clone(), out).await;
    }
    // The banner comes once the device answers: never before a refusal.
    let banner = format!("{host}:{port} (Ctrl-C to stop)");
    sim::run_foreground_with(opts, || out.value("listening", &banner)).await
}
