//! The device commands in micro-ota's line protocol, for devices that run
//! micro-ota's runtime (docs/protocol.md §6).

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::push::SourceReader;
use super::{Device, DeviceInfo, DirEntry, PushEvent};
use crate::auth::SigningKey;
use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::protocol::{line, micro_ota};

/// micro-ota's login: the plaintext password as the first line, when one is set.
pub(super) async fn login(dev: &mut Device) -> Result<()> {
    let Some(password) = dev.options().password.clone() else {
        return Ok(());
    };
    // Only reached when the caller chose micro-ota's protocol explicitly.
    tracing::warn!(target = %dev.target(), "sending the password in plaintext, as micro-ota's protocol does");
    dev.send(&line::encode(password.expose())).await?;
    dev.flush().await?;
    match dev.read_line("micro-ota login").await?.as_str() {
        "denied" => {
            dev.mark_closed();
            Err(Error::Auth("the device denied the password".into()))
        }
        // `ok` from a password-protected device; `unknown` from one without.
        _ => Ok(()),
    }
}

async fn send_line(dev: &mut Device, text: &str) -> Result<()> {
    dev.send(&line::encode(text)).await?;
    dev.flush().await
}

/// Send a line command and expect one exact reply line.
async fn command(dev: &mut Device, cmd: &str, expect: &str) -> Result<()> {
    send_line(dev, cmd).await?;
    expect_line(dev, cmd, expect).await
}

/// Read one reply line and expect it to be `expect`; an error reply is
/// turned into its error.
async fn expect_line(dev: &mut Device, what: &str, expect: &str) -> Result<()> {
    let reply = dev.read_line(what).await?;
    if reply == expect {
        return Ok(());
    }
    micro_ota::parse_reply(&reply)?;
    Err(Error::Protocol(format!(
        "expected {expect:?} after {what}, got {reply:?}"
    )))
}

pub(super) async fn ping(dev: &mut Device) -> Result<()> {
    command(dev, "ping", "pong").await
}

pub(super) async fn rm(dev: &mut Device, path: &str) -> Result<()> {
    command(dev, &format!("rm {path}"), "ok").await
}

pub(super) async fn reset(dev: &mut Device) -> Result<()> {
    command(dev, "reset", "ok").await
}

pub(super) async fn version(dev: &mut Device) -> Result<String> {
    send_line(dev, "version").await?;
    let reply = dev.read_line("version").await?;
    let value: serde_json::Value = serde_json::from_str(&reply)
        .map_err(|e| Error::Protocol(format!("malformed version reply {reply:?}: {e}")))?;
    Ok(value
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string())
}

/// micro-ota reports only its version.
pub(super) async fn info(dev: &mut Device) -> Result<DeviceInfo> {
    Ok(DeviceInfo {
        version: version(dev).await?,
        extra: Default::default(),
    })
}

pub(super) async fn ls(dev: &mut Device, path: &str) -> Result<Vec<DirEntry>> {
    send_line(dev, &format!("ls {path}")).await?;
    let mut entries = Vec::new();
    loop {
        let l = dev.read_line("ls").await?;
        if l.is_empty() {
            return Ok(entries);
        }
        if entries.is_empty() && l.starts_with("error") {
            micro_ota::parse_reply(&l)?;
        }
        let (name, is_dir) = match l.strip_suffix('/') {
            Some(n) => (n.to_string(), true),
            None => (l, false),
        };
        entries.push(DirEntry {
            name,
            is_dir,
            size: 0,
        });
    }
}

/// Ask for a file; returns the size micro-ota announces before its bytes.
pub(super) async fn get_size(dev: &mut Device, path: &str) -> Result<u64> {
    send_line(dev, &format!("get {path}")).await?;
    let head = dev.read_line("get").await?;
    match head.parse() {
        Ok(n) => Ok(n),
        Err(_) => {
            micro_ota::parse_reply(&head)?;
            Err(Error::Protocol(format!(
                "malformed get reply {:?}",
                crate::text::escape_controls(&head)
            )))
        }
    }
}

/// Copy the `size` raw bytes that follow the size line into `out`, by `deadline`.
pub(super) async fn get_body<W>(
    dev: &mut Device,
    path: &str,
    size: u64,
    out: &mut W,
    deadline: Instant,
) -> Result<u64>
where
    W: tokio::io::AsyncWrite + Unpin + Send + ?Sized,
{
    let mut got = 0u64;
    while got < size {
        let n = (size - got).min(64 * 1024) as usize;
        let wait = deadline.saturating_duration_since(Instant::now());
        let chunk = dev.read_raw_within(n, "get", wait).await?;
        got += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(std::path::Path::new(path), e))?;
    }
    Ok(got)
}

/// Push `manifest` as micro-ota's `stream_ota` container (what micro-ota's
/// own CLI sends), signed with `key` when given; the device commits it as
/// a whole and restarts.
pub(super) async fn push_stream(
    dev: &mut Device,
    bundle: &Bundle,
    manifest: &Manifest,
    key: Option<&SigningKey>,
    total: u64,
    progress: &mut (dyn FnMut(&PushEvent) + Send),
) -> Result<()> {
    let len = micro_ota::container_len(&manifest.version, &manifest.files)?;
    dev.send(micro_ota::stream_ota_line(len).as_bytes()).await?;
    dev.flush().await?;
    expect_line(dev, "stream_ota", "ready").await?;
    progress(&PushEvent::Started {
        files: manifest.files.len(),
        bytes: total,
    });
    let count = u16::try_from(manifest.files.len())
        .map_err(|_| Error::InvalidArgument("micro-ota streams hold at most 65535 files".into()))?;
    let mut enc = micro_ota::OtasEncoder::new(key);
    let header = enc.header(&manifest.version, count)?;
    dev.send(&header).await?;
    let mut buf = vec![0u8; 4096];
    let mut sent = 0u64;
    for entry in &manifest.files {
        progress(&PushEvent::File {
            path: entry.path.clone(),
            size: entry.size,
        });
        let fh = enc.file_header(entry)?;
        dev.send(&fh).await?;
        let mut file = SourceReader::open(bundle.source(&entry.path)?).await?;
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            enc.data(&buf[..n]);
            dev.send(&buf[..n]).await?;
            sent += n as u64;
            progress(&PushEvent::Progress { sent, total });
        }
    }
    let trailer = enc.trailer();
    dev.send(&trailer).await?;
    dev.flush().await?;
    progress(&PushEvent::Committing);
    let wait = dev.options().commit_timeout;
    let reply = dev.read_line_within("stream_ota commit", wait).await?;
    micro_ota::parse_reply(&reply)?;
    dev.mark_closed();
    Ok(())
}

/// What a micro-ota device says it has installed: its `/ota_manifest.json`
/// (`{"files": {path: {"size", "sha256"}}}`), as path → (size, sha256 hex).
/// `None` when it has none or it cannot be read as such (a first push, or a
/// device that keeps no such file): then everything is sent.
pub(super) async fn installed_files(
    dev: &mut Device,
) -> Result<Option<std::collections::BTreeMap<String, (u64, String)>>> {
    const LIMIT: u64 = 4 * 1024 * 1024;
    let size = match get_size(dev, INSTALLED_MANIFEST).await {
        Ok(n) if n <= LIMIT => n,
        Ok(n) => {
            tracing::debug!(
                size = n,
                "micro-ota manifest too large to read; sending every file"
            );
            return Ok(None);
        }
        Err(Error::Device { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut body = Vec::with_capacity(size as usize);
    let deadline = Instant::now() + dev.options().timeout;
    get_body(dev, INSTALLED_MANIFEST, size, &mut body, deadline).await?;
    Ok(micro_ota::parse_installed(&body))
}

/// Where micro-ota keeps the manifest of its last install.
const INSTALLED_MANIFEST: &str = "ota_manifest.json";

/// Push `manifest` in micro-ota's older `start_ota` session: the manifest,
/// then one `file` command per file of `send` (all of them when `None`),
/// then `end_ota`. The device keeps the files it is not sent (micro-ota
/// commits what was staged and removes only what left the manifest), so
/// `send` may leave out those it holds already.
pub(super) async fn push_session(
    dev: &mut Device,
    bundle: &Bundle,
    manifest: &Manifest,
    send: Option<&std::collections::BTreeSet<String>>,
    total: u64,
    progress: &mut (dyn FnMut(&PushEvent) + Send),
) -> Result<()> {
    dev.send(micro_ota::start_ota_line().as_bytes()).await?;
    dev.flush().await?;
    expect_line(dev, "start_ota", "ready").await?;
    let json = manifest.to_json();
    dev.send(micro_ota::manifest_header(json.len()).as_bytes())
        .await?;
    dev.send(json.as_bytes()).await?;
    dev.flush().await?;
    expect_line(dev, "manifest", "ok").await?;
    progress(&PushEvent::Started {
        files: manifest.files.len(),
        bytes: total,
    });
    let mut sent = 0u64;
    for entry in &manifest.files {
        if send.is_some_and(|s| !s.contains(&entry.path)) {
            continue;
        }
        progress(&PushEvent::File {
            path: entry.path.clone(),
            size: entry.size,
        });
        dev.send(micro_ota::file_line(entry)?.as_bytes()).await?;
        let data = SourceReader::open(bundle.source(&entry.path)?)
            .await?
            .read_to_end()
            .await?;
        dev.send(&data).await?;
        dev.flush().await?;
        expect_line(dev, "file", "ok").await?;
        sent += data.len() as u64;
        progress(&PushEvent::Progress { sent, total });
    }
    progress(&PushEvent::Committing);
    dev.send(micro_ota::end_ota_line().as_bytes()).await?;
    dev.flush().await?;
    let wait = dev.options().commit_timeout;
    let reply = dev.read_line_within("end_ota", wait).await?;
    micro_ota::parse_reply(&reply)?;
    dev.mark_closed();
    Ok(())
}
