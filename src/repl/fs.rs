//! The device filesystem over the REPL: [`ReplFs`] runs a small agent program
//! on the board and talks a compact, 8-bit clean binary protocol to it.
//!
//! The agent (`src/repl/fs_agent.py`, about 5 KB once its comments are
//! stripped) is sent once with [`Repl::start`]; it needs nothing installed on
//! the board. It switches the console to raw bytes (`micropython.kbd_intr(-1)`,
//! and `termios.setraw` on the unix port), then serves commands until
//! [`ReplFs::close`] — many files in one run, so no per-file exec or compile
//! cost. Its RAM use is fixed (a few buffers of at most a few KB, plus a
//! `2^wbits` inflate window while a compressed file is written), whatever the
//! size of the files.
//!
//! - **Flow control.** The host may have at most [`FsOptions::window`] bytes
//!   in flight; the agent grants [`FsOptions::credit`] more bytes (one `0x06`
//!   byte) each time it has taken that many in. With the defaults (128-byte
//!   grants, 256 bytes in flight, MicroPython's own raw-paste figures) a
//!   board's UART receive buffer never overflows.
//! - **Compression.** When the board has `deflate` (and `io.IOBase`), a file
//!   that compresses is sent as one raw deflate stream (`wbits` chosen from
//!   the board's free RAM, see [`FsOptions::wbits`]); one that does not is
//!   sent as it is.
//! - **Atomic, verified writes.** A file is written to `<path>.uota-tmp`,
//!   hashed with SHA-256 as it is written, compared with the host's digest and
//!   only then renamed over `<path>`. On a mismatch, a write error or a
//!   dropped link the old file stays as it was and the temporary one is
//!   removed. Reads ([`ReplFs::get`]) are checked the same way on the host.
//!
//! The bytes exchanged are described in `docs/repl.md` ("Files over the REPL").
//!
//! ```no_run
//! # async fn demo() -> uota::Result<()> {
//! use uota::repl::fs::{FsOptions, ReplFs};
//! use uota::repl::Repl;
//! use uota::transport::pty::PtyTransport;
//!
//! let mut repl = Repl::new(PtyTransport::open("/dev/ttyUSB0")?);
//! let mut fs = ReplFs::open(&mut repl, FsOptions::default()).await?;
//! fs.put("/hello.txt", b"hi there").await?;
//! assert_eq!(fs.get("/hello.txt").await?, b"hi there");
//! let report = fs.put_tree("project".as_ref(), "/", &mut |_| {}).await?;
//! println!("{} files sent", report.files_sent);
//! fs.close().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};

use super::Repl;
use crate::error::{DeviceErrorCode, Error, Result};
use crate::manifest::FileSource;
// GRANT: the agent's grant of `FsOptions::credit` more bytes.
use crate::protocol::credit::{Credit, CreditWindow, GRANT};
use crate::transport::Transport;

/// The agent's source, as kept in the repository (comments included).
pub const AGENT_SOURCE: &str = include_str!("fs_agent.py");

/// The protocol version in the agent's hello line (`uota-fs:1 …`).
const HELLO: &[u8] = b"uota-fs:1 ";
/// What the raw REPL prints when a program ends (the agent exited).
const PROGRAM_END: u8 = 0x04;
/// The suffix of the temporary file a put writes before the rename.
pub const TMP_SUFFIX: &str = ".uota-tmp";

/// Host → agent commands (the first byte of a command frame).
mod op {
    pub const PUT: u8 = b'P';
    pub const GET: u8 = b'G';
    pub const HASH: u8 = b'H';
    pub const STAT: u8 = b'S';
    pub const LS: u8 = b'L';
    pub const MKDIR: u8 = b'M';
    pub const RM: u8 = b'R';
    pub const FREE: u8 = b'F';
    pub const QUIT: u8 = b'Q';
}

/// Agent → host replies (the first byte of a reply frame).
mod tag {
    pub const OK: u8 = b'K';
    pub const ERR: u8 = b'X';
    pub const ENTRY: u8 = b'E';
    pub const SIZE: u8 = b'S';
    pub const DATA: u8 = b'D';
    pub const DIGEST: u8 = b'H';
}

/// The most bytes a segment of file data may carry (its length is a u16).
const MAX_SEGMENT: usize = 65_535;
/// How much of a file the host reads at a time (and probes for compression).
const BLOCK: usize = 64 * 1024;
/// Queued bytes above which sending waits for the device to take some.
const TX_HIGH: usize = 64 * 1024;
/// A compressed file must be at most this share (in %) of the original.
const WORTH_COMPRESSING: usize = 92;

/// Whether files are compressed on the way to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// Compress files that shrink, when the board has `deflate` (the default).
    #[default]
    Auto,
    /// Never compress.
    Off,
}

/// How [`ReplFs`] talks to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    /// Bytes the agent takes in per grant: it reads at most this much at a
    /// time and sends one grant byte for each such amount (64 to 16384).
    pub credit: usize,
    /// Bytes the host may have sent that the agent has not granted back yet;
    /// at least twice [`credit`](Self::credit). Keep it at or below the
    /// board's console receive buffer when the link has no flow control of
    /// its own (a UART: 256 is safe on every port, as MicroPython's raw-paste
    /// mode uses); a USB CDC console or a pty can take much more.
    pub window: usize,
    /// Compression of files sent to the device.
    pub deflate: DeflateMode,
    /// The deflate window (`2^wbits` bytes of device RAM while a compressed
    /// file is written), 9 to 15. `None` chooses from the board's free heap:
    /// 12 (4 KB) with at least 64 KB free, 10 (1 KB) with at least 16 KB,
    /// else no compression.
    pub wbits: Option<u8>,
    /// The largest segment of file data in one frame (up to 65535).
    pub segment: usize,
    /// How long the host waits for the device to answer or grant.
    pub reply_timeout: Duration,
    /// How long the agent waits for a command (or for the rest of one) before
    /// it gives the console back to the REPL by itself.
    pub idle_timeout: Duration,
    /// [`put_tree`](ReplFs::put_tree)/[`put_files`](ReplFs::put_files): skip
    /// files the device already has with the same SHA-256.
    pub skip_unchanged: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            credit: CreditWindow::UART.credit,
            window: CreditWindow::UART.window,
            deflate: DeflateMode::Auto,
            wbits: None,
            segment: 16 * 1024,
            reply_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            skip_unchanged: true,
        }
    }
}

impl FsOptions {
    /// Options for a link that cannot overrun the board's receive buffer: a
    /// USB CDC console (ESP32-S2/S3, RP2040), or a pseudo-terminal. Grants of
    /// 2 KB and 8 KB in flight, so that round trips stop mattering.
    pub fn fast_link() -> Self {
        Self {
            credit: CreditWindow::FAST_LINK.credit,
            window: CreditWindow::FAST_LINK.window,
            ..Self::default()
        }
    }

    /// The settings for a link with these capabilities: [`FsOptions::fast_link`]
    /// when the link has flow control of its own, else the UART defaults.
    pub fn for_link(capabilities: crate::transport::link::Capabilities) -> Self {
        if capabilities.flow_control {
            Self::fast_link()
        } else {
            Self::default()
        }
    }

    /// The flow-control settings.
    pub fn credit_window(&self) -> CreditWindow {
        CreditWindow {
            credit: self.credit,
            window: self.window,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("FsOptions: {what}")));
        self.credit_window().check().or_else(bad)?;
        if let Some(w) = self.wbits {
            if !(9..=15).contains(&w) {
                return bad(format!("wbits must be 9..=15, not {w}"));
            }
        }
        if !(1..=MAX_SEGMENT).contains(&self.segment) {
            return bad(format!("segment must be 1..=65535, not {}", self.segment));
        }
        if self.idle_timeout < Duration::from_secs(2) {
            return bad("idle_timeout must be at least 2 s".into());
        }
        Ok(())
    }
}

/// What the agent said about the board when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The board can inflate (`deflate.DeflateIO` over an `io.IOBase` stream).
    pub deflate: bool,
    /// Free heap once the agent was loaded, bytes.
    pub mem_free: u64,
    /// The deflate window used for files sent in this session, if any.
    pub wbits: Option<u8>,
}

/// A file or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
}

/// One entry of a device folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The name within the folder.
    pub name: String,
    /// File or folder.
    pub kind: EntryKind,
    /// Size in bytes (0 for a folder).
    pub size: u64,
}

/// A device path's `os.stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStat {
    /// File or folder.
    pub kind: EntryKind,
    /// `st_mode`.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// `st_mtime` as the board counts it (its epoch; 0 where unknown).
    pub mtime: i64,
}

/// Free space and heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsFree {
    /// Size of the filesystem, bytes.
    pub fs_total: u64,
    /// Free bytes on it.
    pub fs_free: u64,
    /// Free heap after a garbage collection, bytes.
    pub mem_free: u64,
    /// Allocated heap at that time, bytes.
    pub mem_alloc: u64,
}

/// A file to install: its device path and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Device path (`/lib/uota/hal.py`; relative paths are taken from `/`).
    pub path: String,
    /// Contents.
    pub data: FileSource,
}

/// Progress of a [`ReplFs::put_files`] run, reported after each file is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutProgress {
    /// The file just sent (or skipped).
    pub path: String,
    /// Files sent or skipped so far.
    pub files_done: usize,
    /// Files in the run.
    pub files_total: usize,
    /// File bytes sent or skipped so far.
    pub bytes_done: u64,
    /// File bytes in the run.
    pub bytes_total: u64,
}

/// What a [`ReplFs::put_files`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutReport {
    /// Files written.
    pub files_sent: usize,
    /// Files left alone because the device had them already.
    pub files_skipped: usize,
    /// Files sent compressed.
    pub files_compressed: usize,
    /// Folders made sure of.
    pub dirs: usize,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Bytes sent to the device for them (frames and compression included).
    pub wire_bytes: u64,
}

/// A reply frame from the agent.
#[derive(Debug)]
struct Reply {
    tag: u8,
    payload: Vec<u8>,
}

/// How sending a file ended.
#[derive(Debug)]
enum Sent {
    /// All of it was queued.
    Whole {
        /// As a deflate stream.
        compressed: bool,
    },
    /// Its source failed part-way; the device will refuse it.
    Aborted(Error),
}

/// A file-transfer session with the agent on a board, over a [`Repl`].
///
/// Open it with [`ReplFs::open`] and end it with [`ReplFs::close`], which
/// gives the console back to the raw REPL. A session dropped without
/// `close()` leaves the agent running until its idle timeout
/// ([`FsOptions::idle_timeout`]); the REPL then needs
/// [`Repl::interrupt`] before its next exec.
///
/// Any error other than a refused operation (a device error reply, which
/// leaves the session usable) ends the session: later calls fail.
#[derive(Debug)]
pub struct ReplFs<'r, T: Transport> {
    repl: &'r mut Repl<T>,
    opts: FsOptions,
    info: AgentInfo,
    /// Bytes received and not parsed yet.
    rx: Vec<u8>,
    /// Bytes queued for the device.
    tx: Vec<u8>,
    /// Bytes the host may still send.
    credit: Credit,
    replies: VecDeque<Reply>,
    /// Bytes sent to the device in this session.
    sent: u64,
    last_io: Instant,
    /// `None` while usable; why the session ended otherwise.
    broken: Option<String>,
    /// `quit` was sent: the end of the program is expected.
    quitting: bool,
    closed: bool,
    buf: Vec<u8>,
}

impl<'r, T: Transport> ReplFs<'r, T> {
    /// Start the agent on the board behind `repl` and wait for its hello.
    ///
    /// Whatever the REPL was doing is left as [`Repl::start`] leaves it (a
    /// program it still follows is an error; the REPL is entered if needed).
    pub async fn open(repl: &'r mut Repl<T>, opts: FsOptions) -> Result<ReplFs<'r, T>> {
        opts.check()?;
        let code = agent_code(&opts);
        let started = Instant::now();
        repl.start(&code).await?;
        let mut fs = ReplFs {
            repl,
            info: AgentInfo {
                deflate: false,
                mem_free: 0,
                wbits: None,
            },
            rx: Vec::new(),
            tx: Vec::new(),
            credit: Credit::new(opts.credit_window()),
            replies: VecDeque::new(),
            sent: 0,
            last_io: Instant::now(),
            broken: None,
            quitting: false,
            closed: false,
            buf: vec![0; 16 * 1024],
            opts,
        };
        fs.read_hello().await?;
        tracing::debug!(
            peer = %fs.repl.peer(),
            agent_bytes = code.len(),
            took = ?started.elapsed(),
            info = ?fs.info,
            "fs agent up"
        );
        Ok(fs)
    }

    /// What the agent reported about the board, and the deflate window used.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The options of this session.
    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// Bytes sent to the device so far in this session (agent excluded).
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Write `data` to the device file `path` (replacing it atomically; the
    /// folder must exist).
    ///
    /// # Errors
    ///
    /// [`Error::HashMismatch`] when the device received something else than
    /// was sent, [`Error::Device`] for a filesystem error on the board (code
    /// `not_found`, `no_space`, `is_a_directory`, …); the old file is intact
    /// either way.
    pub async fn put(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let mut src = data;
        self.put_reader(path, &mut src).await
    }

    /// Write what `src` yields to the device file `path`, streaming it (the
    /// host holds at most one block of 64 KB of it at a time).
    pub async fn put_reader(&mut self, path: &str, src: &mut (dyn Read + Send)) -> Result<()> {
        self.ready().await?;
        let path = device_path(path)?;
        let sent = self.send_file(&path, src).await?;
        let reply = self.reply().await?;
        match sent {
            Sent::Whole { .. } => expect_ok(&reply, "put"),
            Sent::Aborted(e) => Err(e),
        }
    }

    /// Copy the local folder `local` to the device folder `remote` (created
    /// with its parents), with everything under it, in one run of the agent.
    pub async fn put_tree(
        &mut self,
        local: &Path,
        remote: &str,
        progress: &mut (dyn FnMut(&PutProgress) + Send),
    ) -> Result<PutReport> {
        let remote = device_path(remote)?;
        let base = remote.trim_end_matches('/');
        let mut dirs = vec![remote.clone()];
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(local).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(local).to_path_buf();
                Error::io(path, e.into())
            })?;
            let rel = entry
                .path()
                .strip_prefix(local)
                .expect("walkdir yields paths under its root");
            if rel.as_os_str().is_empty() {
                continue;
            }
            let rel = rel
                .to_str()
                .ok_or_else(|| Error::InvalidPath {
                    path: entry.path().display().to_string(),
                    reason: "not UTF-8".into(),
                })?
                .replace('\\', "/");
            let dest = format!("{base}/{rel}");
            if entry.file_type().is_dir() {
                dirs.push(dest);
            } else if entry.file_type().is_file() {
                files.push(TreeFile {
                    path: dest,
                    data: FileSource::Disk(entry.path().to_path_buf()),
                });
            }
        }
        self.put_files(&dirs, &files, progress).await
    }

    /// Install `files` (and make sure the folders `dirs` exist), in one run:
    /// folders are made first (with their parents, and those of every file),
    /// then the files are streamed back to back without waiting for the
    /// device between them. With [`FsOptions::skip_unchanged`] the device's
    /// digests are asked for first (one round trip for all), and files it
    /// already has are not sent.
    ///
    /// Every file is tried; the first failure is returned after all ran.
    pub async fn put_files(
        &mut self,
        dirs: &[String],
        files: &[TreeFile],
        progress: &mut (dyn FnMut(&PutProgress) + Send),
    ) -> Result<PutReport> {
        self.ready().await?;
        let mut report = PutReport::default();
        let mut targets = Vec::with_capacity(files.len());
        let mut folders = BTreeSet::new();
        for d in dirs {
            let d = device_path(d)?;
            if d != "/" {
                folders.insert(d);
            }
        }
        for f in files {
            let path = device_path(&f.path)?;
            let mut parent = parent_of(&path);
            while parent != "/" {
                folders.insert(parent.to_string());
                parent = parent_of(parent);
            }
            targets.push((path, &f.data));
        }
        // Only the deepest folders are needed: mkdir makes the parents. The
        // folders under `d` sort right after `d/`.
        let leaves: Vec<&String> = folders
            .iter()
            .filter(|d| {
                let prefix = format!("{d}/");
                folders
                    .range(prefix.clone()..)
                    .next()
                    .is_none_or(|next| !next.starts_with(&prefix))
            })
            .collect();
        report.dirs = folders.len();

        // (A local file that cannot be read fails when it is sent.)
        let sizes: Vec<u64> = targets
            .iter()
            .map(|(_, data)| data.size().unwrap_or(0))
            .collect();
        let bytes_total: u64 = sizes.iter().sum();

        let skip = if self.opts.skip_unchanged && !targets.is_empty() {
            self.unchanged(&targets, &sizes).await?
        } else {
            vec![false; targets.len()]
        };

        let mut pending = 0usize;
        let mut discard = 0usize;
        let mut first_error = None;
        for d in &leaves {
            self.command(op::MKDIR, d.as_bytes()).await?;
            pending += 1;
        }
        let sent_before = self.sent;
        let mut bytes_done = 0u64;
        for (i, (path, data)) in targets.iter().enumerate() {
            if skip[i] {
                report.files_skipped += 1;
            } else {
                let sent = match data {
                    FileSource::Bytes(b) => {
                        let mut src = b.as_slice();
                        self.send_file(path, &mut src).await
                    }
                    FileSource::Disk(p) => match std::fs::File::open(p) {
                        Ok(mut f) => self.send_file(path, &mut f).await,
                        Err(e) => Err(Error::io(p, e)),
                    },
                };
                match sent {
                    Ok(Sent::Whole { compressed }) => {
                        report.files_compressed += usize::from(compressed);
                        report.files_sent += 1;
                        report.bytes += sizes[i];
                        pending += 1;
                    }
                    Ok(Sent::Aborted(e)) => {
                        // Its (refusing) reply comes too.
                        discard += 1;
                        first_error.get_or_insert(e);
                    }
                    // The link failed: the session is over.
                    Err(e) if self.broken.is_some() => return Err(e),
                    // A local file could not be opened or read: nothing was sent.
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            bytes_done += sizes[i];
            progress(&PutProgress {
                path: path.clone(),
                files_done: i + 1,
                files_total: targets.len(),
                bytes_done,
                bytes_total,
            });
        }
        for _ in 0..pending + discard {
            let reply = self.reply().await?;
            if let Err(e) = expect_ok(&reply, "put") {
                tracing::warn!(error = %e, "fs: a file was not installed");
                first_error.get_or_insert(e);
            }
        }
        report.wire_bytes = self.sent - sent_before;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Which of `targets` the device already has (same size and SHA-256).
    async fn unchanged(
        &mut self,
        targets: &[(String, &FileSource)],
        sizes: &[u64],
    ) -> Result<Vec<bool>> {
        for (path, _) in targets {
            self.command(op::HASH, path.as_bytes()).await?;
        }
        let mut remote = Vec::with_capacity(targets.len());
        for _ in targets {
            let reply = self.reply().await?;
            remote.push(match reply.tag {
                tag::OK if reply.payload.len() >= 32 => {
                    let size = parse_u64(&reply.payload[32..]);
                    Some((reply.payload[..32].to_vec(), size))
                }
                tag::ERR => None,
                other => return Err(unexpected(other, "hash")),
            });
        }
        let mut out = Vec::with_capacity(targets.len());
        for (i, (_, data)) in targets.iter().enumerate() {
            let same = match &remote[i] {
                Some((digest, size)) if Some(sizes[i]) == *size => data
                    .sha256()
                    .is_ok_and(|d| d.as_slice() == digest.as_slice()),
                _ => false,
            };
            out.push(same);
        }
        Ok(out)
    }

    /// Read the device file `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Device`] with code `not_found` (and the like) when the board
    /// cannot read it, [`Error::HashMismatch`] when what arrived differs from
    /// what the board read.
    pub async fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_to(path, &mut out).await?;
        Ok(out)
    }

    /// Read the device file `path` into `out`, streaming; returns its size.
    /// `out` may have received part of the file when this fails.
    pub async fn get_to(
        &mut self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::GET, path.as_bytes()).await?;
        let head = self.reply().await?;
        let size = match head.tag {
            tag::SIZE => parse_u64(&head.payload),
            tag::ERR => return Err(device_error("get", &head.payload)),
            other => return Err(unexpected(other, "get")),
        };
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        loop {
            let r = self.reply().await?;
            match r.tag {
                tag::DATA => {
                    hasher.update(&r.payload);
                    got += r.payload.len() as u64;
                    out.write_all(&r.payload)
                        .map_err(|e| Error::io(format!("<output of {path}>"), e))?;
                }
                tag::DIGEST => {
                    let ok = r.payload.as_slice() == hasher.finalize().as_slice();
                    if !ok || Some(got) != size {
                        return Err(Error::HashMismatch { path });
                    }
                    return Ok(got);
                }
                tag::ERR => return Err(device_error("get", &r.payload)),
                other => return Err(unexpected(other, "get")),
            }
        }
    }

    /// The SHA-256 and size of the device file `path`, or `None` when it
    /// does not exist (or cannot be read).
    pub async fn sha256(&mut self, path: &str) -> Result<Option<([u8; 32], u64)>> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::HASH, path.as_bytes()).await?;
        let r = self.reply().await?;
        match r.tag {
            tag::OK if r.payload.len() >= 32 => {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&r.payload[..32]);
                Ok(Some((digest, parse_u64(&r.payload[32..]).unwrap_or(0))))
            }
            tag::ERR => Ok(None),
            other => Err(unexpected(other, "hash")),
        }
    }

    /// `os.stat` of a device path; [`Error::Device`] with code `not_found`
    /// when it does not exist.
    pub async fn stat(&mut self, path: &str) -> Result<RemoteStat> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::STAT, path.as_bytes()).await?;
        let r = self.reply().await?;
        match r.tag {
            tag::OK => {
                let text = String::from_utf8_lossy(&r.payload);
                let mut it = text.split(' ');
                let mode: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let mtime = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                Ok(RemoteStat {
                    kind: if mode & 0x4000 != 0 {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    },
                    mode,
                    size,
                    mtime,
                })
            }
            tag::ERR => Err(device_error("stat", &r.payload)),
            other => Err(unexpected(other, "stat")),
        }
    }

    /// Whether a device path exists.
    pub async fn exists(&mut self, path: &str) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(Error::Device {
                code: DeviceErrorCode::NotFound,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries of a device folder, sorted by name.
    pub async fn ls(&mut self, path: &str) -> Result<Vec<RemoteEntry>> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::LS, path.as_bytes()).await?;
        let mut out = Vec::new();
        loop {
            let r = self.reply().await?;
            match r.tag {
                tag::ENTRY => {
                    let text = String::from_utf8_lossy(&r.payload);
                    let mut it = text.splitn(3, ' ');
                    let dir = it.next() == Some("1");
                    let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let name = it.next().unwrap_or_default().to_string();
                    out.push(RemoteEntry {
                        name,
                        kind: if dir { EntryKind::Dir } else { EntryKind::File },
                        size,
                    });
                }
                tag::OK => break,
                tag::ERR => return Err(device_error("ls", &r.payload)),
                other => return Err(unexpected(other, "ls")),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Make the device folder `path` and its parents; an existing folder is
    /// fine, a file in the way is [`Error::Device`] `not_a_directory`.
    pub async fn mkdir(&mut self, path: &str) -> Result<()> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::MKDIR, path.as_bytes()).await?;
        let r = self.reply().await?;
        expect_ok(&r, "mkdir")
    }

    /// Remove a device file or an empty folder; with `recursive`, a folder
    /// and everything in it (in bounded RAM).
    pub async fn rm(&mut self, path: &str, recursive: bool) -> Result<()> {
        self.ready().await?;
        let path = device_path(path)?;
        let mut payload = vec![u8::from(recursive)];
        payload.extend_from_slice(path.as_bytes());
        self.command(op::RM, &payload).await?;
        let r = self.reply().await?;
        expect_ok(&r, "rm")
    }

    /// Free space of the filesystem holding `path`, and the free heap.
    pub async fn free(&mut self, path: &str) -> Result<FsFree> {
        self.ready().await?;
        let path = device_path(path)?;
        self.command(op::FREE, path.as_bytes()).await?;
        let r = self.reply().await?;
        match r.tag {
            tag::OK => {
                let text = String::from_utf8_lossy(&r.payload);
                let v: Vec<u64> = text.split(' ').filter_map(|s| s.parse().ok()).collect();
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                Ok(FsFree {
                    fs_total: at(0),
                    fs_free: at(1),
                    mem_free: at(2),
                    mem_alloc: at(3),
                })
            }
            tag::ERR => Err(device_error("free", &r.payload)),
            other => Err(unexpected(other, "free")),
        }
    }

    /// End the session: the agent restores the console and exits, and the
    /// REPL is back at the raw prompt.
    pub async fn close(mut self) -> Result<()> {
        self.usable()?;
        if self.maybe_idle() {
            // The agent has ended by itself (or is about to).
            return self.wait_idle_end().await;
        }
        self.quitting = true;
        self.command(op::QUIT, &[]).await?;
        let r = self.reply().await?;
        expect_ok(&r, "quit")?;
        self.closed = true;
        let rest = std::mem::take(&mut self.rx);
        if !rest.is_empty() {
            self.repl.machine_mut().handle_input(&rest, Instant::now());
        }
        self.repl.follow().await?;
        Ok(())
    }

    // --- sending ----------------------------------------------------------

    /// Queue one command frame.
    async fn command(&mut self, op: u8, payload: &[u8]) -> Result<()> {
        let len = u16::try_from(payload.len())
            .map_err(|_| Error::InvalidArgument("a path of more than 64 KB".into()))?;
        let [lo, hi] = len.to_le_bytes();
        self.tx.extend_from_slice(&[op, lo, hi]);
        self.tx.extend_from_slice(payload);
        self.send_some().await
    }

    /// Queue a whole file (header, segments, trailer). Does not wait for the
    /// device's answer: one reply is due for it unless this fails. A local
    /// error once the header is queued (the source cannot be read) ends the
    /// file with a trailer the device refuses, so the link stays in step.
    async fn send_file(&mut self, path: &str, src: &mut (dyn Read + Send)) -> Result<Sent> {
        let io_err = |e| Error::io(format!("<source of {path}>"), e);
        let mut block = vec![0u8; BLOCK];
        let mut n = read_full(src, &mut block).map_err(io_err)?;
        let mut hasher = Sha256::new();
        hasher.update(&block[..n]);
        let mut size = n as u64;
        let whole = n < BLOCK;

        // Compress the first block; keep the compressor if it was worth it.
        let mut zout = Vec::new();
        let mut z = self.info.wbits.filter(|_| n >= 64).and_then(|w| {
            let mut c = Compress::new_with_window_bits(Compression::best(), false, w);
            let flush = if whole {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            deflate_into(&mut c, &block[..n], &mut zout, flush).ok()?;
            (zout.len() * 100 <= n * WORTH_COMPRESSING).then_some((c, w))
        });
        let (flags, wbits) = match &z {
            Some((_, w)) => (1u8, *w),
            None => (0u8, 0u8),
        };
        let mut header = vec![flags, wbits];
        header.extend_from_slice(path.as_bytes());
        self.command(op::PUT, &header).await?;
        match &z {
            Some(_) => self.segments(&std::mem::take(&mut zout)).await?,
            None => self.segments(&block[..n]).await?,
        }
        let mut failed = None;
        if !whole {
            loop {
                n = match read_full(src, &mut block) {
                    Ok(n) => n,
                    Err(e) => {
                        failed = Some(io_err(e));
                        break;
                    }
                };
                hasher.update(&block[..n]);
                size += n as u64;
                let last = n < BLOCK;
                match &mut z {
                    Some((c, _)) => {
                        let flush = if last {
                            FlushCompress::Finish
                        } else {
                            FlushCompress::None
                        };
                        if let Err(e) = deflate_into(c, &block[..n], &mut zout, flush) {
                            failed = Some(e);
                            break;
                        }
                        self.segments(&std::mem::take(&mut zout)).await?;
                    }
                    None => self.segments(&block[..n]).await?,
                }
                if last {
                    break;
                }
            }
        }
        let size = match u32::try_from(size) {
            Ok(size) if failed.is_none() => size,
            Ok(_) => 0,
            Err(_) => {
                failed = Some(Error::InvalidArgument(format!(
                    "{path}: files of 4 GB and more cannot be sent"
                )));
                0
            }
        };
        self.tx.extend_from_slice(&[0, 0]);
        match failed {
            None => self.tx.extend_from_slice(&hasher.finalize()),
            // No file hashes to zeros: the device refuses it.
            Some(_) => self.tx.extend_from_slice(&[0u8; 32]),
        }
        self.tx.extend_from_slice(&size.to_le_bytes());
        self.send_some().await?;
        Ok(match failed {
            None => Sent::Whole {
                compressed: z.is_some(),
            },
            Some(e) => Sent::Aborted(e),
        })
    }

    /// Queue `data` as segments of file data.
    async fn segments(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(self.opts.segment) {
            let len = piece.len() as u16;
            self.tx.extend_from_slice(&len.to_le_bytes());
            self.tx.extend_from_slice(piece);
            self.send_some().await?;
        }
        Ok(())
    }

    /// Send queued bytes while a lot are queued.
    async fn send_some(&mut self) -> Result<()> {
        while self.tx.len() >= TX_HIGH {
            self.send_credit().await?;
        }
        Ok(())
    }

    /// Send all queued bytes.
    async fn flush(&mut self) -> Result<()> {
        while !self.tx.is_empty() {
            self.send_credit().await?;
        }
        Ok(())
    }

    /// Send as much as the credit allows, waiting for a grant when there is none.
    async fn send_credit(&mut self) -> Result<()> {
        let n = self.credit.take(self.tx.len());
        if n == 0 {
            return self.receive().await;
        }
        let result = self.repl.write_raw(&self.tx[..n]).await;
        if let Err(e) = result {
            return Err(self.fail(e));
        }
        self.tx.drain(..n);
        self.sent += n as u64;
        self.last_io = Instant::now();
        Ok(())
    }

    // --- receiving --------------------------------------------------------

    /// The next reply, sending whatever is queued first.
    async fn reply(&mut self) -> Result<Reply> {
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Ok(r);
            }
            if !self.tx.is_empty() {
                self.flush().await?;
                continue;
            }
            self.receive().await?;
        }
    }

    /// Read from the device once, and parse what arrived.
    async fn receive(&mut self) -> Result<()> {
        let after = self.opts.reply_timeout;
        let read = tokio::time::timeout(after, self.repl.read_raw(&mut self.buf)).await;
        let n = match read {
            Err(_) => {
                return Err(self.fail(Error::Timeout {
                    what: "the board's file agent to answer".into(),
                    after,
                }))
            }
            Ok(Err(e)) => return Err(self.fail(e)),
            Ok(Ok(0)) => {
                return Err(self.fail(Error::ConnectionClosed {
                    during: "a file transfer over the REPL".into(),
                }))
            }
            Ok(Ok(n)) => n,
        };
        self.last_io = Instant::now();
        self.rx.extend_from_slice(&self.buf[..n]);
        self.parse().await
    }

    /// Take grants and complete reply frames out of the receive buffer.
    async fn parse(&mut self) -> Result<()> {
        enum Stop {
            /// Everything complete was taken; the rest waits for more bytes.
            More,
            /// The agent ended here (the raw REPL's end-of-program byte).
            Ended,
            /// A byte no frame starts with.
            Junk,
        }
        let mut at = 0;
        let stop = loop {
            let Some(&first) = self.rx.get(at) else {
                break Stop::More;
            };
            match first {
                GRANT => {
                    self.credit.grant();
                    at += 1;
                }
                tag::OK | tag::ERR | tag::ENTRY | tag::SIZE | tag::DATA | tag::DIGEST => {
                    if self.rx.len() < at + 3 {
                        break Stop::More;
                    }
                    let len = usize::from(u16::from_le_bytes([self.rx[at + 1], self.rx[at + 2]]));
                    if self.rx.len() < at + 3 + len {
                        break Stop::More;
                    }
                    self.replies.push_back(Reply {
                        tag: first,
                        payload: self.rx[at + 3..at + 3 + len].to_vec(),
                    });
                    at += 3 + len;
                }
                PROGRAM_END if self.quitting => break Stop::More,
                PROGRAM_END => break Stop::Ended,
                _ => break Stop::Junk,
            }
        };
        match stop {
            Stop::More => {
                self.rx.drain(..at);
                Ok(())
            }
            Stop::Junk => {
                let near = &self.rx[at..self.rx.len().min(at + 48)];
                let e = Error::Protocol(format!(
                    "the board's file agent sent {:?}",
                    String::from_utf8_lossy(near)
                ));
                Err(self.fail(e))
            }
            Stop::Ended => {
                // The raw REPL's framing of the program's end follows.
                let rest = self.rx.split_off(at);
                self.rx.clear();
                self.repl.machine_mut().handle_input(&rest, Instant::now());
                self.closed = true;
                let e = match self.repl.follow().await {
                    Err(e) => e,
                    Ok(out) => Error::Protocol(format!(
                        "the board's file agent ended unexpectedly (idle timeout?){}",
                        if out.stdout.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", out.stdout_text().trim())
                        }
                    )),
                };
                Err(self.fail(e))
            }
        }
    }

    /// Mark the session unusable after `e`, and return it.
    fn fail(&mut self, e: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        e
    }

    /// Fail early when the session cannot be used any more.
    fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Protocol(format!(
                "the file session over the REPL ended earlier: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Whether the agent may have given up waiting for a command.
    fn maybe_idle(&self) -> bool {
        self.last_io.elapsed() + Duration::from_secs(1) >= self.opts.idle_timeout
    }

    /// Wait until an agent that may have timed out has surely ended, and
    /// collect the end of its run.
    async fn wait_idle_end(&mut self) -> Result<()> {
        let end = self.last_io + self.opts.idle_timeout + Duration::from_millis(500);
        tokio::time::sleep_until(end.into()).await;
        let rest = std::mem::take(&mut self.rx);
        self.repl.machine_mut().handle_input(&rest, Instant::now());
        self.closed = true;
        let ended = self.repl.follow().await;
        if let Err(e) = ended {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Make sure the session can take a command: usable, and an agent that
    /// may have timed out (the host was idle) restarted.
    async fn ready(&mut self) -> Result<()> {
        self.usable()?;
        if !self.maybe_idle() {
            return Ok(());
        }
        tracing::debug!("fs: the agent was idle; starting it again");
        self.wait_idle_end().await?;
        let code = agent_code(&self.opts);
        if let Err(e) = self.repl.start(&code).await {
            return Err(self.fail(e));
        }
        self.closed = false;
        self.credit.reset();
        self.replies.clear();
        self.read_hello().await
    }

    async fn read_hello(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.opts.reply_timeout;
        loop {
            if let Some(start) = find(&self.rx, HELLO) {
                if let Some(nl) = self.rx[start..].iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&self.rx[start + HELLO.len()..start + nl])
                        .into_owned();
                    self.rx.drain(..start + nl + 1);
                    let v: Vec<u64> = line
                        .split_whitespace()
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    self.info.deflate = v.first() == Some(&1);
                    self.info.mem_free = v.get(1).copied().unwrap_or(0);
                    self.info.wbits = self.choose_wbits();
                    // Grants may follow at once; nothing else may.
                    return self.parse().await;
                }
            }
            if let Some(end) = self.rx.iter().position(|&b| b == PROGRAM_END) {
                let rest = self.rx.split_off(end);
                self.rx.clear();
                self.repl.machine_mut().handle_input(&rest, Instant::now());
                self.closed = true;
                let outcome = self.repl.follow().await;
                return Err(match outcome {
                    Err(e) => e,
                    Ok(out) => Error::Protocol(format!(
                        "the file agent ended before it started: {:?}",
                        out.stdout_text()
                    )),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.repl.read_raw(&mut self.buf)).await;
            match read {
                Err(_) => {
                    return Err(self.fail(Error::Timeout {
                        what: "the board's file agent to start".into(),
                        after: self.opts.reply_timeout,
                    }))
                }
                Ok(Err(e)) => return Err(self.fail(e)),
                Ok(Ok(0)) => {
                    return Err(self.fail(Error::ConnectionClosed {
                        during: "starting the file agent".into(),
                    }))
                }
                Ok(Ok(n)) => self.rx.extend_from_slice(&self.buf[..n]),
            }
        }
    }

    fn choose_wbits(&self) -> Option<u8> {
        if self.opts.deflate == DeflateMode::Off || !self.info.deflate {
            return None;
        }
        if let Some(w) = self.opts.wbits {
            return Some(w);
        }
        match self.info.mem_free {
            m if m >= 64 * 1024 => Some(12),
            m if m >= 16 * 1024 => Some(10),
            _ => None,
        }
    }
}

impl<T: Transport> Drop for ReplFs<'_, T> {
    fn drop(&mut self) {
        if !self.closed && self.broken.is_none() {
            tracing::warn!(
                peer = %self.repl.peer(),
                "file session dropped without close(): the agent keeps the console until its idle timeout"
            );
        }
    }
}

/// Bring back the REPL of a board whose file agent was abandoned half-way
/// (the host died or gave up in the middle of a frame).
///
/// A board's console read blocks until the bytes it waits for arrive, so an
/// agent left in the middle of a frame does not notice its idle timeout. Zero
/// bytes get it out of any state: they complete the pending read, end the
/// file's data (an empty segment), fail its digest (the temporary file is
/// removed, the old file kept) and then form command 0, which makes the agent
/// exit. This sends zeros in small paced pieces until the program's end shows
/// up (at most about 70 KB), then leaves the REPL to be re-entered by the next
/// exec ([`ReplMode::Unknown`](super::ReplMode::Unknown)).
pub async fn recover<T: Transport>(repl: &mut Repl<T>) -> Result<()> {
    const PIECE: usize = 256;
    const MOST: usize = MAX_SEGMENT + 8 * 1024;
    let zeros = [0u8; PIECE];
    let mut seen = repl.take_received();
    let mut buf = vec![0u8; 4096];
    let mut sent = 0;
    let ended = loop {
        // The program's end: `\x04 <stderr> \x04>`, and then silence (the
        // raw REPL does not echo the zeros that follow).
        if seen.ends_with(b"\x04>") {
            let head = &seen[..seen.len() - 2];
            if let Some(at) = head.iter().rposition(|&b| b == PROGRAM_END) {
                break Some(at);
            }
        }
        if sent >= MOST {
            break None;
        }
        repl.write_raw(&zeros).await?;
        sent += PIECE;
        // About 10 KB/s: slower than a 115200-baud line, so a UART keeps up.
        let pause = tokio::time::sleep(Duration::from_millis(25));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                read = repl.read_raw(&mut buf) => match read? {
                    0 => return Err(Error::ConnectionClosed { during: "recovering the REPL".into() }),
                    n => seen.extend_from_slice(&buf[..n]),
                },
            }
        }
    };
    let Some(at) = ended else {
        return Err(Error::Timeout {
            what: "the board's file agent to give the console back".into(),
            after: Duration::from_millis((MOST / PIECE) as u64 * 25),
        });
    };
    tracing::debug!(zeros = sent, "fs: the abandoned agent ended");
    repl.machine_mut().set_mode(super::ReplMode::Running);
    repl.machine_mut().handle_input(&seen[at..], Instant::now());
    match repl.follow().await {
        Ok(_) | Err(Error::DeviceException { .. }) => {}
        Err(e) => return Err(e),
    }
    // Zeros sent after the agent ended sit in the raw REPL's line: the next
    // exec interrupts and re-enters, which clears it.
    repl.machine_mut().set_mode(super::ReplMode::Unknown);
    Ok(())
}

/// The agent as sent: the settings, then the source without comments and
/// with one space per indentation level.
pub fn agent_code(opts: &FsOptions) -> String {
    let mut out = format!(
        "C = {}\nT = {}\n",
        opts.credit,
        opts.idle_timeout.as_millis()
    );
    for line in AGENT_SOURCE.lines() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let depth = (line.len() - body.len()) / 4;
        out.extend(std::iter::repeat_n(' ', depth));
        out.push_str(body.trim_end());
        out.push('\n');
    }
    out
}

/// A device path made absolute and clean: `lib//x.py` → `/lib/x.py`,
/// `/` stays `/`. `..`, NUL bytes and backslashes are refused.
pub fn device_path(path: &str) -> Result<String> {
    let bad = |reason: &str| {
        Err(Error::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path.contains('\\') {
        return bad("contains a backslash; device paths use /");
    }
    let mut out = String::with_capacity(path.len() + 1);
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return bad("contains .."),
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The folder holding a clean device path (`/` for top-level entries).
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Fill `buf` from `src` as far as it goes; fewer bytes only at the end.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Compress `input` into `out` (appending), then flush as asked.
fn deflate_into(
    c: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Result<()> {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(input.len() / 2 + 8192);
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, out, flush)
            .map_err(|e| Error::InvalidArgument(format!("deflate: {e}")))?;
        let used = (c.total_in() - before) as usize;
        input = &input[used..];
        let room_left = out.len() < out.capacity();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            FlushCompress::None => input.is_empty(),
            _ => input.is_empty() && room_left,
        };
        if done {
            return Ok(());
        }
    }
}

fn expect_ok(reply: &Reply, what: &str) -> Result<()> {
    match reply.tag {
        tag::OK => Ok(()),
        tag::ERR => Err(device_error(what, &reply.payload)),
        other => Err(unexpected(other, what)),
    }
}

fn unexpected(tag: u8, what: &str) -> Error {
    Error::Protocol(format!(
        "the board's file agent answered {what} with an unexpected frame {:?}",
        char::from(tag)
    ))
}

/// The name uota gives a MicroPython errno in [`Error::Device`] codes.
fn errno_code(errno: i64) -> &'static str {
    match errno {
        1 | 13 => "denied",
        2 => "not_found",
        5 => "io_error",
        17 => "exists",
        20 => "not_a_directory",
        21 => "is_a_directory",
        22 => "invalid",
        28 => "no_space",
        30 => "read_only",
        36 => "name_too_long",
        39 | 66 => "not_empty",
        110 => "timeout",
        _ => "os_error",
    }
}

/// An agent's error reply (`<code>\0<path>`) as an [`Error`].
fn device_error(op: &str, payload: &[u8]) -> Error {
    let text = String::from_utf8_lossy(payload);
    let (code, path) = text.split_once('\0').unwrap_or((&text, ""));
    match code {
        "sha" => Error::HashMismatch {
            path: path.to_string(),
        },
        "inflate" => Error::Device {
            op: op.to_string(),
            code: "inflate".into(),
            message: format!("{path}: the compressed data did not inflate on the board"),
        },
        "op" => Error::Protocol(format!(
            "the board's file agent does not know command {path}"
        )),
        c => match c.parse::<i64>() {
            Ok(n) => Error::Device {
                op: op.to_string(),
                code: DeviceErrorCode::parse(errno_code(n)),
                message: format!("{path}: [Errno {n}]"),
            },
            Err(_) => Error::Device {
                op: op.to_string(),
                code: "error".into(),
                message: format!("{path}: {c}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_are_made_absolute_and_clean() {
        assert_eq!(device_path("lib//x.py").unwrap(), "/lib/x.py");
        assert_eq!(device_path("/").unwrap(), "/");
        assert_eq!(device_path("").unwrap(), "/");
        assert_eq!(device_path("./a/./b/").unwrap(), "/a/b");
        assert!(device_path("a/../b").is_err());
        assert!(device_path("a\\b").is_err());
        assert!(device_path("a\0b").is_err());
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
    }

    #[test]
    fn the_agent_is_minified_and_safe_for_the_raw_repl() {
        let code = agent_code(&FsOptions::default());
        assert!(code.starts_with("C = 128\nT = 30000\n"));
        assert!(!code.bytes().any(|b| (1..=4).contains(&b)), "control bytes");
        assert!(!code.lines().any(|l| l.trim_start().starts_with('#')));
        assert!(code.len() < AGENT_SOURCE.len() * 3 / 4, "{}", code.len());
        assert!(
            code.contains("\ndef put(p):\n fl = p[0]\n"),
            "one space per level"
        );
    }

    #[test]
    fn errors_from_the_agent_are_typed() {
        assert!(matches!(
            device_error("put", b"sha\0/a"),
            Error::HashMismatch { path } if path == "/a"
        ));
        match device_error("get", b"2\0/nope") {
            Error::Device { op, code, message } => {
                assert_eq!((op.as_str(), code.as_str()), ("get", "not_found"));
                assert!(message.contains("/nope"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deflate_streams_round_trip() {
        let line = b"def f(x):\n    return x\n";
        let data: Vec<u8> = (0..200_000usize).map(|i| line[i % line.len()]).collect();
        let mut c = Compress::new_with_window_bits(Compression::best(), false, 10);
        let mut out = Vec::new();
        deflate_into(&mut c, &data[..70_000], &mut out, FlushCompress::Sync).unwrap();
        deflate_into(&mut c, &data[70_000..], &mut out, FlushCompress::Finish).unwrap();
        let mut d = flate2::Decompress::new_with_window_bits(false, 10);
        let mut back = Vec::with_capacity(data.len() + 16);
        d.decompress_vec(&out, &mut back, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(back, data);
        assert!(out.len() * 20 < data.len());
    }
}
