//! Commands that talk to a board's REPL over USB serial, runtime or not:
//! `uota bootstrap`, `uota board` (what MicroPython it runs, cached in
//! `.uota_cache.json`) and `uota fs` (files over the REPL).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::Output;
use super::project_root;
use crate::config::Project;
use crate::device::{Capabilities, Link, LinkChoice, LinkKind};
use crate::error::{Error, Result};
use crate::repl::bootstrap::{bootstrap, BootstrapOptions};
use crate::repl::fs::{DeflateMode, EntryKind, FsOptions, ReplFs};
use crate::repl::info::{BoardInfo, InfoCache};
use crate::repl::Repl;
use crate::transport::serial::SerialTransport;

/// Which serial port, how fast, which project.
#[derive(Debug, Args)]
pub(crate) struct Port {
    /// Serial port (default: `serialPort` from the config, else the one board attached).
    #[arg(long)]
    port: Option<String>,
    /// Baud rate (default: `serialBaud` from the config, else 115200).
    #[arg(long)]
    baud: Option<u32>,
    /// Project folder (default: the current folder).
    #[arg(long)]
    project: Option<PathBuf>,
}

/// `uota fs` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum FsCommand {
    /// List a device folder.
    Ls {
        #[command(flatten)]
        port: Port,
        /// Device folder.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a device file to a local file (or stdout with `-`).
    Get {
        #[command(flatten)]
        port: Port,
        /// Device path.
        path: String,
        /// Local destination (default: the file's name in the current folder).
        dest: Option<PathBuf>,
    },
    /// Copy a local file, or a folder with everything in it, to the device.
    Put {
        #[command(flatten)]
        port: Port,
        /// Local file or folder.
        src: PathBuf,
        /// Device path (default: `/` + the local name).
        dest: Option<String>,
        /// Send uncompressed even when the board can inflate.
        #[arg(long)]
        no_compress: bool,
        /// Send every file, even those the board already has.
        #[arg(long)]
        all: bool,
    },
    /// Remove a device file (or a folder with `-r`).
    Rm {
        #[command(flatten)]
        port: Port,
        /// Device path.
        path: String,
        /// Remove a folder and everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Create a device folder (and its parents).
    Mkdir {
        #[command(flatten)]
        port: Port,
        /// Device path.
        path: String,
    },
    /// Show a device path's kind, size and mtime.
    Stat {
        #[command(flatten)]
        port: Port,
        /// Device path.
        path: String,
    },
}

/// `uota bootstrap`'s options.
#[derive(Debug, Args)]
pub(crate) struct BootstrapArgs {
    #[command(flatten)]
    port: Port,
    /// Install the runtime's modules as .mpy, compiled with mpy-cross for the
    /// board (an error without a matching mpy-cross). Default: .mpy when a
    /// matching mpy-cross is found, else .py.
    #[arg(long, conflicts_with = "py")]
    mpy: bool,
    /// Install the runtime's modules as .py source (the board compiles them
    /// at import, which takes far more RAM).
    #[arg(long)]
    py: bool,
    /// Do not soft-reset the board at the end.
    #[arg(long)]
    no_reset: bool,
}

struct Board {
    repl: Repl<SerialTransport>,
    path: String,
    /// File-agent settings for this link.
    fs: FsOptions,
    project: Option<Project>,
}

/// The serial link of `port`'s options (the port configured, given or
/// auto-detected; the baud rate) and the project.
pub(crate) fn resolve(port: &Port) -> Result<(SerialLink, Option<Project>)> {
    let root = project_root(&port.project);
    let project = if root.join("config/ota.json").is_file() {
        Some(Project::load(&root)?)
    } else {
        None
    };
    let choice = LinkChoice {
        kind: LinkKind::Serial,
        port: port.port.clone(),
        baud: port.baud,
        ..LinkChoice::default()
    };
    let link = choice
        .resolve(project.as_ref().map(|p| &p.config))?
        .resolve()?;
    let capabilities = link.capabilities();
    match link {
        Link::Serial {
            path: Some(path),
            baud,
        } => Ok((
            SerialLink {
                path,
                baud,
                capabilities,
            },
            project,
        )),
        other => Err(Error::InvalidArgument(format!(
            "{other} is not a serial port"
        ))),
    }
}

/// A serial port resolved to its path.
pub(crate) struct SerialLink {
    pub(crate) path: String,
    pub(crate) baud: u32,
    pub(crate) capabilities: Capabilities,
}

async fn open(port: &Port) -> Result<Board> {
    let (link, project) = resolve(port)?;
    let io = SerialTransport::open(&link.path, link.baud, Duration::from_secs(5)).await?;
    let mut repl = Repl::new(io);
    // The board may be rebooting (after an OTA session, say).
    repl.ensure_raw_within(Duration::from_secs(10)).await?;
    Ok(Board {
        repl,
        fs: FsOptions::for_link(link.capabilities),
        path: link.path,
        project,
    })
}

/// Read what the board runs and record it in the project's `.uota_cache.json`.
pub(crate) async fn board_info(port: Port, out: &Output) -> Result<()> {
    let mut b = open(&port).await?;
    let info = BoardInfo::read(&mut b.repl).await?;
    let _ = b.repl.leave_raw().await;
    if let Some(project) = &b.project {
        let mut cache = InfoCache::load(&project.root)?;
        cache.insert(&info.cache_key(&b.path), &info);
        cache.save()?;
    }
    out.json_or_lines(&info);
    Ok(())
}

pub(crate) async fn run_bootstrap(args: BootstrapArgs, out: &Output) -> Result<()> {
    let mut b = open(&args.port).await?;
    let opts = BootstrapOptions {
        mpy: args.mpy,
        mpy_if_possible: !args.py,
        reset: !args.no_reset,
        fs: b.fs.clone(),
        ..BootstrapOptions::default()
    };
    let report = bootstrap(&mut b.repl, b.project.as_ref(), &opts).await?;
    if let Some(project) = &b.project {
        let mut cache = InfoCache::load(&project.root)?;
        cache.insert(&report.board.cache_key(&b.path), &report.board);
        cache.save()?;
    }
    out.json_or_lines(&json!({
        "installed": report.files.len(),
        "compiled": report.compiled,
        "removed": report.removed,
        "bytes": report.put.bytes,
        "wire_bytes": report.put.wire_bytes,
        "reset": report.reset,
        "micropython": report.board.micropython,
        "platform": report.board.platform,
    }));
    Ok(())
}

pub(crate) async fn run_fs(cmd: FsCommand, out: &Output) -> Result<()> {
    let port = match &cmd {
        FsCommand::Ls { port, .. }
        | FsCommand::Get { port, .. }
        | FsCommand::Put { port, .. }
        | FsCommand::Rm { port, .. }
        | FsCommand::Mkdir { port, .. }
        | FsCommand::Stat { port, .. } => port,
    };
    let mut b = open(port).await?;
    let mut opts = b.fs.clone();
    if let FsCommand::Put {
        no_compress, all, ..
    } = &cmd
    {
        if *no_compress {
            opts.deflate = DeflateMode::Off;
        }
        opts.skip_unchanged = !*all;
    }
    let mut fs = ReplFs::open(&mut b.repl, opts).await?;
    let result = fs_command(&mut fs, cmd, out).await;
    let closed = fs.close().await;
    result?;
    closed?;
    let _ = b.repl.leave_raw().await;
    Ok(())
}

async fn fs_command(
    fs: &mut ReplFs<'_, SerialTransport>,
    cmd: FsCommand,
    out: &Output,
) -> Result<()> {
    match cmd {
        FsCommand::Ls { path, .. } => {
            let entries: Vec<crate::device::DirEntry> = fs
                .ls(&path)
                .await?
                .into_iter()
                .map(|e| crate::device::DirEntry {
                    name: e.name,
                    is_dir: e.kind == EntryKind::Dir,
                    size: e.size,
                })
                .collect();
            out.entries(&entries);
        }
        FsCommand::Get { path, dest, .. } => {
            let data = fs.get(&path).await?;
            write_local(&path, dest, &data, out)?;
        }
        FsCommand::Put { src, dest, .. } => {
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::InvalidArgument(format!("bad source {}", src.display())))?;
            let dest = dest.unwrap_or_else(|| format!("/{name}"));
            if src.is_dir() {
                let report = fs.put_tree(&src, &dest, &mut |_| {}).await?;
                out.json_or_lines(&json!({
                    "files_sent": report.files_sent,
                    "files_skipped": report.files_skipped,
                    "files_compressed": report.files_compressed,
                    "bytes": report.bytes,
                    "wire_bytes": report.wire_bytes,
                }));
            } else {
                let data = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                fs.put(&dest, &data).await?;
                out.value("written", &format!("{dest} ({} bytes)", data.len()));
            }
        }
        FsCommand::Rm {
            path, recursive, ..
        } => {
            fs.rm(&path, recursive).await?;
            out.value("removed", &path);
        }
        FsCommand::Mkdir { path, .. } => {
            fs.mkdir(&path).await?;
            out.value("created", &path);
        }
        FsCommand::Stat { path, .. } => {
            let st = fs.stat(&path).await?;
            out.json_or_lines(&json!({
                "path": path,
                "kind": if st.kind == EntryKind::Dir { "dir" } else { "file" },
                "size": st.size,
                "mtime": st.mtime,
            }));
        }
    }
    Ok(())
}

/// Write a device file's bytes to `dest` (default: its name here; `-`: stdout).
/// Where `uota get PATH [DEST]` writes: DEST, else the file's name here.
pub(crate) fn local_dest(path: &str, dest: Option<PathBuf>) -> PathBuf {
    dest.unwrap_or_else(|| {
        PathBuf::from(
            path.rsplit('/')
                .next()
                .filter(|s| !s.is_empty() && *s != "." && *s != "..")
                .unwrap_or("out"),
        )
    })
}

pub(crate) fn write_local(
    path: &str,
    dest: Option<PathBuf>,
    data: &[u8],
    out: &Output,
) -> Result<()> {
    let dest = local_dest(path, dest);
    if dest.as_os_str() == "-" {
        use std::io::Write;
        let mut stdout = std::io::stdout();
        stdout
            .write_all(data)
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::io("<stdout>", e))?;
    } else {
        write_file(&dest, data)?;
        out.value(
            "written",
            &format!("{} ({} bytes)", dest.display(), data.len()),
        );
    }
    Ok(())
}

fn write_file(dest: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(dest, data).map_err(|e| Error::io(dest, e))
}
