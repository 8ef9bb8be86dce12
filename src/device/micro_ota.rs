//! The device commands in micro-ota's line protocol, for devices that run
//! micro-ota's runtime (docs/protocol.md §6).

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{Device, DeviceInfo, DirEntry};
use crate::error::{Error, Result};
use crate::protocol::{line, microota};

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
    let reply = dev.read_line(cmd).await?;
    if reply == expect {
        return Ok(());
    }
    microota::parse_reply(&reply)?;
    Err(Error::Protocol(format!(
        "unexpected reply to {cmd:?}: {reply:?}"
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
            microota::parse_reply(&l)?;
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
            microota::parse_reply(&head)?;
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
