//! Serial virtual devices: the MicroPython unix port on a pseudo-terminal,
//! which the host opens like a board's USB serial port.
//!
//! ```text
//! host tool ── /dev/pts/N ══ pty B ══ relay ══ pty A ══ micropython simboot.py
//!              (path())        (throttled to the baud rate, Ctrl-C → SIGINT)
//! ```
//!
//! The interpreter mounts the device filesystem exactly as a TCP virtual
//! device does (a folder or a littlefs image), optionally runs `/boot.py` and
//! `/main.py` like a board, then serves its REPL (friendly, raw, raw-paste)
//! on pty A. A relay task copies bytes between the two pty masters, at the
//! line rate of a UART when a baud rate is set, so that the host's path stays
//! the same across restarts. With [`SerialSimOptions::rx_buffer`] it also
//! drops what a UART's receive buffer of that size would: bytes that arrive
//! while the device has that many unread ([`VirtualSerialDevice::dropped_bytes`]).
//!
//! Where the unix port differs from a board, the supervisor makes it behave
//! like one:
//!
//! - **Ctrl-C.** The unix port interrupts on SIGINT, not on a `\x03` byte. The
//!   relay turns a `\x03` from the host into SIGINT (and drops the byte) when
//!   the interpreter has its SIGINT handler installed — exactly when a board
//!   would take `\x03` as KeyboardInterrupt (code running,
//!   `micropython.kbd_intr(3)`); otherwise the byte passes as data. The
//!   interpreter is stopped (SIGSTOP) for the instant of that check, so that
//!   it cannot go back to its prompt, where SIGINT would kill it, in between.
//!   This needs Linux's `/proc`.
//! - **Soft reset.** Ctrl-D (or `SystemExit`) ends the process with code 0; the
//!   supervisor prints `MPY: soft reboot\r\n` and starts it again on the same
//!   pty. If it was in the raw REPL, the new process skips `/main.py`, enters
//!   the raw REPL by itself and its friendly banner is dropped, so the host sees
//!   what a board prints: `OK\r\nMPY: soft reboot\r\n` + boot.py's output +
//!   `raw REPL; CTRL-B to exit\r\n>`.
//! - **Reset.** Exit code 75 (the runtime's reset) restarts the process as a
//!   hard reset: `/boot.py` and `/main.py` run again, the friendly REPL follows.
//!
//! Newlines stay as the unix port writes them (`\n`, where boards write `\r\n`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ShimFile, Storage, DEFAULT_IMAGE_SIZE, RESET_EXIT_CODE};
use crate::error::{Error, Result};
use crate::repl::machine::{find, BOOT_BANNER, RAW_BANNER};
use crate::transport::pty::{read_fd, register, set_raw, write_fd};

/// What the boot shim prints before the REPL when the supervisor asked it to
/// come back quietly into the raw REPL (see `device/sim/simboot.py`).
const QUIET_MARK: &[u8] = b"\x00uota-sim-quiet\x00";
/// What a board prints when it soft-resets.
const SOFT_REBOOT_LINE: &[u8] = b"MPY: soft reboot\r\n";

/// How to run a serial virtual device.
#[derive(Debug, Clone)]
pub struct SerialSimOptions {
    /// The device's filesystem (created when missing; nothing is installed).
    pub storage: Storage,
    /// Run `/boot.py` and `/main.py` at each boot, as a board does; `false`
    /// boots straight into the REPL.
    pub run_boot: bool,
    /// Limit the link to a UART's line rate: `baud / 10` bytes per second in
    /// each direction (8N1), delivered in small, evenly paced pieces.
    /// `None` relays as fast as the ptys go.
    pub baud: Option<u32>,
    /// MicroPython heap size (`-X heapsize=`), e.g. `"256k"`.
    pub heap_size: Option<String>,
    /// Interpreter to run; `None` looks for `micropython` (or `$UOTA_MICROPYTHON`).
    pub interpreter: Option<PathBuf>,
    /// Extra environment for the interpreter.
    pub env: Vec<(String, String)>,
    /// Append every byte relayed, both directions, with timestamps, to this file.
    pub trace: Option<PathBuf>,
    /// Emulate a UART's receive buffer of this many bytes (e.g. 256): a byte
    /// from the host that arrives while the device has this many bytes
    /// unread is dropped, as a UART whose FIFO overruns drops it, and
    /// counted ([`VirtualSerialDevice::dropped_bytes`]). Use it with
    /// [`baud`](Self::baud), so that bytes arrive at a line's pace. `None`:
    /// nothing is dropped (a pseudo-terminal blocks the writer instead).
    /// The fill is what the device's tty has ready to read, so it shows
    /// while that tty is raw (the raw REPL, a serial session, the file
    /// agent); while the unix port runs code from the friendly REPL its tty
    /// is in line mode, and an unfinished line does not count.
    pub rx_buffer: Option<usize>,
}

impl SerialSimOptions {
    /// A device whose filesystem is the host folder `root`.
    pub fn folder(root: impl Into<PathBuf>) -> Self {
        Self::with_storage(Storage::Folder(root.into()))
    }

    /// A device whose filesystem is a littlefs2 image of the default size.
    pub fn image(path: impl Into<PathBuf>) -> Self {
        Self::with_storage(Storage::Image {
            path: path.into(),
            size: DEFAULT_IMAGE_SIZE,
        })
    }

    /// A device that boots like a board with the runtime `opts` provisioned
    /// ([`super::provision`]): the same storage, heap and interpreter, its
    /// WiFi server on `opts`' loopback address, and (folder storage) the
    /// flash size `opts` gives it. `/boot.py` and `/main.py` run at each boot.
    pub fn booting(opts: &super::SimOptions) -> Self {
        let mut serial = Self::with_storage(opts.storage.clone());
        serial.run_boot = true;
        serial.heap_size = opts.heap_size.clone();
        serial.interpreter = opts.interpreter.clone();
        serial.env = vec![
            ("UOTA_SIM_HOST".into(), opts.host.clone()),
            ("UOTA_SIM_PORT".into(), opts.port.to_string()),
        ];
        if let (Storage::Folder(_), Some(size)) = (&opts.storage, opts.flash_size) {
            serial
                .env
                .push(("UOTA_SIM_FLASH_SIZE".into(), size.to_string()));
        }
        serial.env.extend(opts.env.iter().cloned());
        serial
    }

    fn with_storage(storage: Storage) -> Self {
        Self {
            storage,
            run_boot: false,
            baud: None,
            heap_size: None,
            interpreter: None,
            env: Vec::new(),
            trace: None,
            rx_buffer: None,
        }
    }
}

/// How long a Ctrl-C waits for the interpreter to reach a safe point before
/// it interrupts it wherever it is.
const CTRL_C_SAFE_POINT_WAIT: Duration = Duration::from_millis(500);

/// State shared by the supervisor, the relay and the handle.
#[derive(Debug, Default)]
struct Shared {
    /// The interpreter's process id, 0 when none runs.
    pid: AtomicI32,
    /// The running interpreter takes Ctrl-C (its setup is done).
    ready: AtomicBool,
    /// The device's REPL was last seen in raw mode.
    raw: AtomicBool,
    /// How many times an interpreter was started.
    boots: AtomicU32,
    /// Bytes from the host dropped by the emulated receive buffer.
    dropped: AtomicU64,
}

impl Shared {
    /// The interpreter, once it runs far enough to take Ctrl-C.
    fn running_pid(&self) -> Option<i32> {
        let pid = self.pid.load(Ordering::SeqCst);
        (pid > 0 && self.ready.load(Ordering::SeqCst)).then_some(pid)
    }
}

/// Whether process `pid` has a handler for SIGINT installed (`/proc/PID/status`).
fn sigint_caught(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|caught| caught & (1 << (libc::SIGINT - 1)) != 0)
}

/// Whether process `pid` is stopped (or gone).
fn is_stopped(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'T' | 't' | 'Z' | 'X')),
        Err(_) => true,
    }
}

/// Whether the stopped process `pid`'s main thread waits in a system call
/// where an interrupt is safe (`/proc/PID/syscall`). The unix port raises
/// KeyboardInterrupt from inside its SIGINT handler, wherever the code is: in
/// the middle of an allocation or of interning a name it would leave the
/// interpreter's heap or name table locked for good (the next import hangs).
/// A board checks for Ctrl-C only between bytecodes; waiting in one of these
/// calls (for input, a socket, a timer, a file's bytes) is the closest the
/// unix port gets to that.
fn at_safe_point(pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let Some(nr) = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return false; // "running", or -1: in user space
    };
    let mut waits = vec![
        libc::SYS_read,
        libc::SYS_pselect6,
        libc::SYS_ppoll,
        libc::SYS_epoll_pwait,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_recvfrom,
        libc::SYS_accept4,
    ];
    #[cfg(target_arch = "x86_64")]
    waits.extend([
        libc::SYS_select,
        libc::SYS_poll,
        libc::SYS_epoll_wait,
        libc::SYS_accept,
    ]);
    waits.contains(&nr)
}

/// Stop `pid` (SIGSTOP) and wait until it is.
async fn stop_process(pid: i32) -> bool {
    // SAFETY: plain kill(2) of the interpreter we started.
    if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
        return false;
    }
    for _ in 0..200 {
        if is_stopped(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// A Ctrl-C from the host: SIGINT to the interpreter when it takes Ctrl-C as
/// an interrupt (its SIGINT handler is installed, as while it runs code with
/// `kbd_intr(3)`); returns whether it did. The interpreter is stopped while
/// its handler is checked and the signal queued, so it cannot drop the
/// handler in between (at the prompt SIGINT would kill it). The signal goes
/// to the main thread when that waits in a safe system call
/// ([`at_safe_point`]); code that never waits (a busy loop) is interrupted
/// after [`CTRL_C_SAFE_POINT_WAIT`] wherever it is.
async fn deliver_ctrl_c(shared: &Shared) -> bool {
    let Some(pid) = shared.running_pid() else {
        return false;
    };
    let give_up = Instant::now() + CTRL_C_SAFE_POINT_WAIT;
    let mut tries = 0u32;
    loop {
        if !stop_process(pid).await {
            return false;
        }
        let caught = sigint_caught(pid);
        let deliver = caught && (at_safe_point(pid) || Instant::now() >= give_up);
        if deliver {
            tracing::debug!(pid, tries, "serial virtual device: Ctrl-C → SIGINT");
            // SAFETY: tgkill(2) to the interpreter's main thread; delivered
            // when the process continues.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGINT) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        if deliver || !caught {
            return caught;
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A message from the supervisor to the device→host relay, kept in order
/// with the device's output.
#[derive(Debug)]
enum Note {
    /// Bytes the "board" prints itself.
    Print(&'static [u8]),
    /// Whether to drop the next boot's friendly banner (up to the raw banner).
    Quiet(bool),
}

/// A running serial virtual device; dropping it kills the interpreter.
#[derive(Debug)]
pub struct VirtualSerialDevice {
    path: PathBuf,
    baud: Option<u32>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    supervisor: Option<JoinHandle<Result<()>>>,
    relays: Vec<JoinHandle<()>>,
    /// The host side's slave, held open so that the path lives while no host has it open.
    _host_slave: OwnedFd,
    _shim: ShimFile,
}

impl VirtualSerialDevice {
    /// Start the device and wait until it boots far enough to take Ctrl-C.
    pub async fn start(opts: SerialSimOptions) -> Result<VirtualSerialDevice> {
        let interpreter = match &opts.interpreter {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => {
                return Err(Error::InterpreterMissing(format!(
                    "{} does not exist",
                    p.display()
                )))
            }
            None => super::find_micropython()?,
        };
        if let Storage::Folder(root) = &opts.storage {
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        }
        let pty_err = |e: io::Error| Error::io("<pty>", e);
        let (device_master, device_slave) = open_pty().map_err(pty_err)?;
        let (host_master, host_slave) = open_pty().map_err(pty_err)?;
        set_raw(device_slave.as_fd()).map_err(pty_err)?;
        set_raw(host_slave.as_fd()).map_err(pty_err)?;
        let path = tty_name(host_slave.as_raw_fd()).map_err(pty_err)?;
        set_nonblocking(device_master.as_raw_fd()).map_err(pty_err)?;
        set_nonblocking(host_master.as_raw_fd()).map_err(pty_err)?;
        let device_master = Arc::new(register(device_master).map_err(pty_err)?);
        let host_master = Arc::new(register(host_master).map_err(pty_err)?);

        let shim = ShimFile::new()?;
        let shared = Arc::new(Shared::default());
        let trace = match &opts.trace {
            Some(p) => Some(Arc::new(Trace::open(p)?)),
            None => None,
        };
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let rate = opts.baud.map(|b| f64::from(b.max(1)) / 10.0);
        let rx_buffer = match opts.rx_buffer {
            Some(size) => Some(RxBuffer {
                size: size.max(1),
                device: device_slave.try_clone().map_err(pty_err)?,
            }),
            None => None,
        };
        let relays = vec![
            tokio::spawn(relay_up(
                host_master.clone(),
                device_master.clone(),
                shared.clone(),
                Pacer::new(rate),
                rx_buffer,
                trace.clone(),
            )),
            tokio::spawn(relay_down(
                device_master.clone(),
                host_master,
                shared.clone(),
                Pacer::new(rate),
                notes_rx,
                trace,
            )),
        ];
        let (stop_tx, stop_rx) = oneshot::channel();
        let ready_file = shim.0.path().join("ready");
        let supervisor = tokio::spawn(supervise(Supervisor {
            opts: opts.clone(),
            interpreter,
            script: shim.path(),
            ready_file,
            device_slave,
            device_master,
            shared: shared.clone(),
            notes: notes_tx,
            stop: stop_rx,
        }));
        let mut dev = VirtualSerialDevice {
            path,
            baud: opts.baud,
            shared,
            stop: Some(stop_tx),
            supervisor: Some(supervisor),
            relays,
            _host_slave: host_slave,
            _shim: shim,
        };
        if let Err(e) = dev.wait_ready(Duration::from_secs(20)).await {
            // The supervisor's own error says more.
            if let Some(task) = dev.supervisor.take_if(|t| t.is_finished()) {
                if let Ok(Err(inner)) = task.await {
                    return Err(inner);
                }
            }
            return Err(e);
        }
        tracing::info!(path = %dev.path.display(), baud = ?dev.baud, "serial virtual device up");
        Ok(dev)
    }

    /// The host side's serial port (`/dev/pts/N`), stable across resets.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line rate the link is throttled to, if any.
    pub fn baud(&self) -> Option<u32> {
        self.baud
    }

    /// How many times the interpreter has started (1 after start; each reset adds one).
    pub fn boots(&self) -> u32 {
        self.shared.boots.load(Ordering::SeqCst)
    }

    /// Bytes from the host that the emulated receive buffer dropped
    /// ([`SerialSimOptions::rx_buffer`]); always 0 without one.
    pub fn dropped_bytes(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Wait until the interpreter runs and takes Ctrl-C (e.g. after a reset).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.shared.ready.load(Ordering::SeqCst) {
                return Ok(());
            }
            if self.supervisor.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(Error::io(
                    "<serial sim>",
                    io::Error::other("the virtual device's supervisor stopped"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("serial virtual device on {} to boot", self.path.display()),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop the interpreter and the relay.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = match self.supervisor.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::io("<serial sim task>", io::Error::other(e.to_string())))?,
            None => Ok(()),
        };
        for relay in self.relays.drain(..) {
            relay.abort();
        }
        result
    }
}

impl Drop for VirtualSerialDevice {
    fn drop(&mut self) {
        let pid = self.shared.pid.swap(0, Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: plain kill(2) of the interpreter we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(task) = self.supervisor.take() {
            task.abort();
        }
        for relay in self.relays.drain(..) {
            relay.abort();
        }
    }
}

/// What the next start of the interpreter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    /// Power-on or reset: boot.py, main.py, friendly REPL.
    Cold,
    /// Soft reset from the friendly REPL: the same as a cold boot.
    SoftFriendly,
    /// Soft reset from the raw REPL: boot.py only, back into the raw REPL.
    SoftRaw,
}

struct Supervisor {
    opts: SerialSimOptions,
    interpreter: PathBuf,
    script: PathBuf,
    ready_file: PathBuf,
    device_slave: OwnedFd,
    device_master: Arc<AsyncFd<OwnedFd>>,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedSender<Note>,
    stop: oneshot::Receiver<()>,
}

impl Supervisor {
    fn command(&self, boot: Boot) -> Result<Command> {
        let mut cmd = Command::new(&self.interpreter);
        if let Some(heap) = &self.opts.heap_size {
            cmd.arg("-X").arg(format!("heapsize={heap}"));
        }
        cmd.arg(&self.script)
            .env("UOTA_SIM_REPL", "1")
            .env("UOTA_SIM_READY", &self.ready_file)
            .env(
                "UOTA_SIM_RUN",
                match (self.opts.run_boot, boot) {
                    (false, _) => "none",
                    (true, Boot::SoftRaw) => "boot",
                    (true, _) => "all",
                },
            )
            .env_remove("MICROPYINSPECT")
            .kill_on_drop(true)
            // Its own process group: the terminal's Ctrl-C is not the device's.
            .process_group(0);
        super::die_with_parent(&mut cmd);
        if boot == Boot::SoftRaw {
            cmd.env("UOTA_SIM_QUIET_BANNER", "1");
        }
        match &self.opts.storage {
            Storage::Folder(root) => {
                let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
                cmd.env("UOTA_SIM_ROOT", root);
            }
            Storage::Image { path, size } => {
                cmd.env("UOTA_SIM_IMAGE", path)
                    .env("UOTA_SIM_IMAGE_SIZE", size.to_string());
            }
        }
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let stdio = |fd: &OwnedFd| -> Result<Stdio> {
            Ok(Stdio::from(
                fd.try_clone().map_err(|e| Error::io("<pty>", e))?,
            ))
        };
        cmd.stdin(stdio(&self.device_slave)?)
            .stdout(stdio(&self.device_slave)?)
            .stderr(stdio(&self.device_slave)?);
        Ok(cmd)
    }
}

/// Run the interpreter on pty A, restarting it after each exit, until stopped.
async fn supervise(mut sv: Supervisor) -> Result<()> {
    let mut boot = Boot::Cold;
    loop {
        let _ = std::fs::remove_file(&sv.ready_file);
        sv.shared.ready.store(false, Ordering::SeqCst);
        let _ = sv.notes.send(Note::Quiet(boot == Boot::SoftRaw));
        if boot == Boot::SoftRaw {
            // Waiting in the input for the new REPL: Ctrl-A, back to raw mode.
            write_all(&sv.device_master, &[crate::repl::machine::CTRL_A])
                .await
                .map_err(|e| Error::io("<pty>", e))?;
        }
        let mut child = sv
            .command(boot)?
            .spawn()
            .map_err(|e| Error::io(&sv.interpreter, e))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        sv.shared.pid.store(pid, Ordering::SeqCst);
        sv.shared.boots.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(pid, ?boot, "serial virtual device: interpreter started");
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| Error::io(&sv.interpreter, e))?,
                _ = &mut sv.stop => {
                    sv.shared.pid.store(0, Ordering::SeqCst);
                    let _ = child.kill().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(Duration::from_millis(5)), if !sv.shared.ready.load(Ordering::SeqCst) => {
                    if std::fs::metadata(&sv.ready_file).is_ok_and(|m| m.len() > 0) {
                        sv.shared.ready.store(true, Ordering::SeqCst);
                    }
                }
            }
        };
        let was_ready = sv.shared.ready.load(Ordering::SeqCst);
        sv.shared.pid.store(0, Ordering::SeqCst);
        sv.shared.ready.store(false, Ordering::SeqCst);
        if status.code() == Some(2) && !was_ready {
            // The shim's "bad environment or image": restarting cannot help.
            return Err(Error::io(
                storage_path(&sv.opts.storage),
                io::Error::other(
                    "the virtual device's boot shim refused to start (exit code 2: bad \
                     environment or image); its console output says why",
                ),
            ));
        }
        // Let the relay pass on everything the process printed before the board's own words.
        drain_wait(&sv.device_master).await;
        boot = match status.code() {
            Some(0) => {
                let raw = sv.shared.raw.load(Ordering::SeqCst);
                tracing::info!(raw, "serial virtual device: soft reset");
                let _ = sv.notes.send(Note::Print(SOFT_REBOOT_LINE));
                if raw {
                    Boot::SoftRaw
                } else {
                    Boot::SoftFriendly
                }
            }
            Some(RESET_EXIT_CODE) => {
                tracing::info!("serial virtual device: reset");
                Boot::Cold
            }
            // The runtime's TCP server found its address taken: rebooting cannot help.
            Some(super::ADDR_IN_USE_EXIT_CODE) => {
                let host = env_value(&sv.opts.env, "UOTA_SIM_HOST").unwrap_or("127.0.0.1");
                let port = env_value(&sv.opts.env, "UOTA_SIM_PORT")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                return Err(super::port_in_use(host, port));
            }
            _ => {
                tracing::warn!(%status, "serial virtual device: interpreter ended; rebooting it");
                tokio::time::sleep(Duration::from_millis(300)).await;
                Boot::Cold
            }
        };
    }
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn storage_path(storage: &Storage) -> &Path {
    match storage {
        Storage::Folder(p) => p,
        Storage::Image { path, .. } => path,
    }
}

/// Wait (briefly) until pty A holds no unread output.
async fn drain_wait(master: &AsyncFd<OwnedFd>) {
    for _ in 0..200 {
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::FIONREAD, &mut pending) };
        if rc != 0 || pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The relay may hold one read chunk still being paced; it goes before any note.
}

/// A UART's receive buffer, emulated on the device's pty.
struct RxBuffer {
    size: usize,
    /// The device's end of the pty: its unread input is the buffer's fill.
    device: OwnedFd,
}

impl RxBuffer {
    /// How many of `n` arriving bytes fit (the rest overrun the buffer).
    fn room(&self, n: usize) -> usize {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD (TIOCINQ) writes one int: the bytes waiting to be read.
        let rc = unsafe { libc::ioctl(self.device.as_raw_fd(), libc::FIONREAD, &mut queued) };
        let queued = if rc == 0 { queued.max(0) as usize } else { 0 };
        n.min(self.size.saturating_sub(queued))
    }
}

/// Write `data` to the device, less what its receive buffer drops.
async fn deliver(
    to: &AsyncFd<OwnedFd>,
    data: &[u8],
    rx: Option<&RxBuffer>,
    shared: &Shared,
) -> io::Result<()> {
    let Some(rx) = rx else {
        return write_all(to, data).await;
    };
    let fits = rx.room(data.len());
    if fits < data.len() {
        let lost = (data.len() - fits) as u64;
        shared.dropped.fetch_add(lost, Ordering::SeqCst);
        tracing::debug!(lost, "serial virtual device: receive buffer overrun");
    }
    write_all(to, &data[..fits]).await
}

/// Host → device: paced copy; a Ctrl-C becomes SIGINT when the device takes it as one.
async fn relay_up(
    from: Arc<AsyncFd<OwnedFd>>,
    to: Arc<AsyncFd<OwnedFd>>,
    shared: Arc<Shared>,
    mut pacer: Pacer,
    rx: Option<RxBuffer>,
    trace: Option<Arc<Trace>>,
) {
    let mut buf = vec![0u8; pacer.chunk()];
    loop {
        let n = match read_some(&from, &mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "serial virtual device: host side read failed");
                return;
            }
        };
        pacer.pace(n).await;
        let data = &buf[..n];
        if let Some(t) = &trace {
            t.log("H>D", data);
        }
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if b != crate::repl::machine::CTRL_C {
                continue;
            }
            // Bytes before the Ctrl-C reach the device first.
            if deliver(&to, &data[start..i], rx.as_ref(), &shared)
                .await
                .is_err()
            {
                return;
            }
            start = i;
            if deliver_ctrl_c(&shared).await {
                // Taken as an interrupt, like a board's: not data.
                start = i + 1;
            }
        }
        if deliver(&to, &data[start..], rx.as_ref(), &shared)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Device → host: paced copy; tracks the REPL mode, adds the board's own
/// lines, hides a quiet reboot's friendly banner.
async fn relay_down(
    from: Arc<AsyncFd<OwnedFd>>,
    to: Arc<AsyncFd<OwnedFd>>,
    shared: Arc<Shared>,
    mut pacer: Pacer,
    mut notes: mpsc::UnboundedReceiver<Note>,
    trace: Option<Arc<Trace>>,
) {
    let mut buf = vec![0u8; pacer.chunk()];
    let mut filter = QuietFilter::default();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let out = tokio::select! {
            biased;
            note = notes.recv() => match note {
                Some(Note::Print(line)) => line.to_vec(),
                Some(Note::Quiet(on)) => {
                    filter = QuietFilter::default();
                    filter.state = if on { Quiet::SeekMark } else { Quiet::Off };
                    continue;
                }
                None => return,
            },
            // A board-like boot may never print the quiet mark (boot.py
            // runs for good): bytes held back as a possible start of the
            // mark go out once the device pauses.
            _ = tokio::time::sleep(Duration::from_millis(20)), if filter.holding() => {
                filter.release_held()
            }
            read = read_some(&from, &mut buf) => match read {
                Ok(n) => {
                    track_mode(&shared, &mut tail, &buf[..n]);
                    filter.push(&buf[..n])
                }
                Err(e) => {
                    tracing::warn!(error = %e, "serial virtual device: device side read failed");
                    return;
                }
            },
        };
        for piece in out.chunks(buf.len()) {
            pacer.pace(piece.len()).await;
            if let Some(t) = &trace {
                t.log("D>H", piece);
            }
            if write_all(&to, piece).await.is_err() {
                return;
            }
        }
    }
}

/// Remember whether the REPL last announced raw or friendly mode.
fn track_mode(shared: &Shared, tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(data);
    let raw = rfind(tail, RAW_BANNER);
    let friendly = rfind(tail, BOOT_BANNER);
    match (raw, friendly) {
        (Some(r), Some(f)) => shared.raw.store(r > f, Ordering::SeqCst),
        (Some(_), None) => shared.raw.store(true, Ordering::SeqCst),
        (None, Some(_)) => shared.raw.store(false, Ordering::SeqCst),
        (None, None) => {}
    }
    let keep = RAW_BANNER.len().max(BOOT_BANNER.len());
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    #[default]
    Off,
    /// Pass output on until the shim's mark.
    SeekMark,
    /// Drop output until the raw banner.
    SeekBanner,
}

/// Drops the friendly banner of a quiet reboot: from the shim's mark to the raw banner.
#[derive(Debug, Default)]
struct QuietFilter {
    state: Quiet,
    pending: Vec<u8>,
    dropped: usize,
}

impl QuietFilter {
    /// Whether bytes are held back as a possible start of the mark.
    fn holding(&self) -> bool {
        self.state == Quiet::SeekMark && !self.pending.is_empty()
    }

    /// The held-back bytes: the device paused, so they were not the mark.
    fn release_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.state == Quiet::Off {
            return data.to_vec();
        }
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.state {
                Quiet::Off => {
                    out.append(&mut self.pending);
                    return out;
                }
                Quiet::SeekMark => match find(&self.pending, QUIET_MARK) {
                    Some(i) => {
                        out.extend_from_slice(&self.pending[..i]);
                        self.pending.drain(..i + QUIET_MARK.len());
                        self.state = Quiet::SeekBanner;
                    }
                    None => {
                        // Hold back only what may be the start of the mark.
                        let hold = partial_suffix(&self.pending, QUIET_MARK);
                        let pass = self.pending.len() - hold;
                        out.extend(self.pending.drain(..pass));
                        return out;
                    }
                },
                Quiet::SeekBanner => match find(&self.pending, RAW_BANNER) {
                    Some(i) => {
                        self.pending.drain(..i);
                        self.state = Quiet::Off;
                    }
                    None => {
                        let keep = RAW_BANNER.len() - 1;
                        if self.pending.len() > keep {
                            let cut = self.pending.len() - keep;
                            self.dropped += cut;
                            self.pending.drain(..cut);
                        }
                        if self.dropped > 4096 {
                            // Not the banner we expected: show what comes.
                            self.state = Quiet::Off;
                            continue;
                        }
                        return out;
                    }
                },
            }
        }
    }
}

/// Length of the longest suffix of `data` that is a proper prefix of `needle`.
fn partial_suffix(data: &[u8], needle: &[u8]) -> usize {
    (1..needle.len().min(data.len() + 1))
        .rev()
        .find(|&k| data.ends_with(&needle[..k]))
        .unwrap_or(0)
}

/// Paces one direction of the link at a UART's byte rate.
#[derive(Debug)]
struct Pacer {
    /// Bytes per second; `None`: no limit.
    rate: Option<f64>,
    /// When the line is free again.
    free_at: Instant,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Self {
            rate,
            free_at: Instant::now(),
        }
    }

    /// Bytes to move at a time: about 2 ms of line time when paced.
    fn chunk(&self) -> usize {
        match self.rate {
            Some(rate) => ((rate / 500.0) as usize).clamp(1, 256),
            None => 4096,
        }
    }

    /// Wait until `n` bytes have crossed the line.
    async fn pace(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        let start = self.free_at.max(Instant::now());
        self.free_at = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(self.free_at).await;
    }
}

/// A log of the bytes relayed.
#[derive(Debug)]
struct Trace {
    file: Mutex<std::fs::File>,
    t0: std::time::Instant,
}

impl Trace {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file: Mutex::new(file),
            t0: std::time::Instant::now(),
        })
    }

    fn log(&self, dir: &str, data: &[u8]) {
        use std::io::Write;
        let line = format!(
            "{:.6} {dir} \"{}\"\n",
            self.t0.elapsed().as_secs_f64(),
            data.escape_ascii()
        );
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|fd| read_fd(fd.as_fd(), buf)) {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => return Ok(n),
            // No slave open right now (cannot happen while we hold it, but be calm).
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                drop(guard);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| write_fd(fd.as_fd(), data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// A new pseudo-terminal pair (master, slave), both close-on-exec.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    // SAFETY: openpty writes two fds; null name/termios/winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and ours.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on an fd we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, slave))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The path of a terminal (`/dev/pts/N`).
fn tty_name(fd: RawFd) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; 256];
    // SAFETY: ttyname_r writes a NUL-terminated name into `buf`.
    let rc = unsafe { libc::ttyname_r(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(len);
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_filter_drops_the_banner_between_mark_and_raw_banner() {
        let mut f = QuietFilter {
            state: Quiet::SeekMark,
            ..Default::default()
        };
        let mut out = f.push(b"boot out\n\x00uota-si");
        out.extend(f.push(b"m-quiet\x00MicroPython x\r\nType \"help()\"\r\n>>> \r\nraw REP"));
        out.extend(f.push(b"L; CTRL-B to exit\r\n>"));
        assert_eq!(out, b"boot out\nraw REPL; CTRL-B to exit\r\n>");
        assert_eq!(f.push(b"OK"), b"OK");
    }

    #[test]
    fn quiet_filter_passes_output_without_a_mark() {
        let mut f = QuietFilter {
            state: Quiet::SeekMark,
            ..Default::default()
        };
        assert_eq!(f.push(b"hello\x00"), b"hello");
        assert_eq!(f.push(b"x"), b"\x00x");
    }

    #[test]
    fn mode_tracking_follows_the_last_banner() {
        let shared = Shared::default();
        let mut tail = Vec::new();
        track_mode(
            &shared,
            &mut tail,
            b"MicroPython v1\r\n>>> \r\nraw REPL; CTRL",
        );
        assert!(!shared.raw.load(Ordering::SeqCst));
        track_mode(&shared, &mut tail, b"-B to exit\r\n>");
        assert!(shared.raw.load(Ordering::SeqCst));
        track_mode(&shared, &mut tail, b"\r\nMicroPython v1\r\n>>> ");
        assert!(!shared.raw.load(Ordering::SeqCst));
    }
}
