//! The device commands in uota's own protocol: JSON requests in frames,
//! file bodies as DATA frames (docs/protocol.md §3–4).

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{Device, DeviceInfo, DirEntry};
use crate::auth::{self, Password, SigningKey};
use crate::error::{DeviceErrorCode, Error, Result};
use crate::manifest::Manifest;
use crate::protocol::push_plan::{StagedFile, Summary};
use crate::protocol::{FrameType, Request, Response};

pub(super) async fn ping(dev: &mut Device) -> Result<()> {
    dev.request(&Request::Ping).await.map(drop)
}

pub(super) async fn info(dev: &mut Device) -> Result<DeviceInfo> {
    dev.request(&Request::Info).await?.into_typed("info")
}

pub(super) async fn ls(dev: &mut Device, path: &str) -> Result<Vec<DirEntry>> {
    let res = dev
        .request(&Request::Ls {
            path: path.to_string(),
            lines: true,
        })
        .await?;
    #[derive(Deserialize)]
    struct Ls {
        #[serde(default)]
        entries: Option<Vec<(String, String, u64)>>,
        #[serde(default)]
        lines: bool,
    }
    let ls: Ls = res.into_typed("ls")?;
    let mut entries: Vec<DirEntry> = match (ls.entries, ls.lines) {
        (Some(entries), _) => entries
            .into_iter()
            .map(|(name, kind, size)| DirEntry {
                name,
                is_dir: kind == "d",
                size,
            })
            .collect(),
        (None, true) => {
            let data = dev.read_data_stream("ls").await?;
            parse_ls_lines(&data)?
        }
        (None, false) => return Err(Error::Protocol("ls: the reply has no entries".into())),
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The `<d|f> <size> <name>` lines of a streamed `ls`.
fn parse_ls_lines(data: &[u8]) -> Result<Vec<DirEntry>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| Error::Protocol("ls: an entry name is not UTF-8".into()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let bad = || Error::Protocol(format!("ls: malformed entry {line:?}"));
            let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
            let (size, name) = rest.split_once(' ').ok_or_else(bad)?;
            if name.is_empty() || !(kind == "d" || kind == "f") {
                return Err(bad());
            }
            Ok(DirEntry {
                name: name.to_string(),
                is_dir: kind == "d",
                size: size.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// Ask for a file; returns the size the device announces before its bytes.
pub(super) async fn get_size(dev: &mut Device, path: &str) -> Result<u64> {
    let res = dev
        .request(&Request::Get {
            path: path.to_string(),
        })
        .await?;
    res.u64_field("size")
        .ok_or_else(|| Error::Protocol(format!("get {path}: the device announced no size")))
}

/// Copy a file's DATA frames into `out` until the empty one, by `deadline`;
/// returns the bytes copied. More than `size` is an error at once.
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
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let f = dev.read_frame("get", wait).await?;
        match f.kind {
            FrameType::Data if f.payload.is_empty() => return Ok(got),
            FrameType::Data => {
                got += f.payload.len() as u64;
                if got > size {
                    dev.mark_closed();
                    return Err(Error::Protocol(format!(
                        "get {path}: the device announced {size} bytes and sent more"
                    )));
                }
                out.write_all(&f.payload)
                    .await
                    .map_err(|e| Error::io(std::path::Path::new(path), e))?;
            }
            FrameType::Response => {
                Response::parse("get", &f.payload)?;
                return Err(Error::Protocol("unexpected reply inside get data".into()));
            }
            FrameType::Request => {
                return Err(Error::Protocol("device sent a request during get".into()))
            }
        }
    }
}

pub(super) async fn rm(dev: &mut Device, path: &str) -> Result<()> {
    dev.request(&Request::Rm {
        path: path.to_string(),
    })
    .await
    .map(drop)
}

pub(super) async fn wipe(dev: &mut Device) -> Result<()> {
    dev.request(&Request::Wipe).await.map(drop)
}

pub(super) async fn passwd(dev: &mut Device, new_password: Option<&Password>) -> Result<()> {
    let verifier = new_password.map(|p| p.verifier()).unwrap_or_default();
    dev.request(&Request::Passwd { verifier }).await.map(drop)
}

pub(super) async fn reset(dev: &mut Device) -> Result<()> {
    dev.request(&Request::Reset).await.map(drop)
}

pub(super) async fn set_floor(dev: &mut Device, release: u64) -> Result<()> {
    dev.request(&Request::Floor { release }).await.map(drop)
}

pub(super) async fn active_manifest(dev: &mut Device) -> Result<Manifest> {
    let res = dev.request(&Request::Manifest).await?;
    let version = res.str_field("version").unwrap_or("unknown").to_string();
    let lines = dev.read_data_stream("manifest").await?;
    Manifest::parse_lines(&version, &lines)
}

/// The active release's version and the SHA-256 of its manifest lines
/// (as [`Manifest::manifest_lines`] writes them), without the lines;
/// `None` from a device too old to say.
pub(super) async fn active_summary(dev: &mut Device) -> Result<Option<Summary>> {
    match dev.request(&Request::Summary).await {
        Ok(res) => Ok(res.str_field("sha256").map(|sha| Summary {
            version: res.str_field("version").unwrap_or("unknown").to_string(),
            sha256: sha.to_string(),
        })),
        Err(Error::Device {
            code: DeviceErrorCode::UnknownOp,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the open push session has staged so far (after a resumed `begin`).
pub(super) async fn staged(dev: &mut Device) -> Result<Vec<StagedFile>> {
    dev.request(&Request::Staged).await?;
    let lines = dev.read_data_stream("staged").await?;
    let text =
        String::from_utf8(lines).map_err(|_| Error::Protocol("staged list is not UTF-8".into()))?;
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(bytes), Some(sha), Some(path)) => Ok(StagedFile {
                    bytes: bytes
                        .parse()
                        .map_err(|_| Error::Protocol(format!("bad staged line {l:?}")))?,
                    sha256: sha.to_string(),
                    path: path.to_string(),
                }),
                _ => Err(Error::Protocol(format!("bad staged line {l:?}"))),
            }
        })
        .collect()
}

/// Replace the device's signing key `current` with `new` (see
/// [`Device::rotate_key`]).
pub(super) async fn rotate_key(
    dev: &mut Device,
    nonce: &str,
    current: &SigningKey,
    new: &SigningKey,
) -> Result<()> {
    dev.authenticate_with_key(current).await?;
    let (key, mac) = auth::rekey_message(current, new, nonce)?;
    let res = dev.request(&Request::Rekey { key, mac }).await?;
    let proof = res.str_field("proof").unwrap_or_default();
    if !auth::constant_time_eq(proof.as_bytes(), auth::rekey_proof(new, nonce).as_bytes()) {
        return Err(Error::Protocol(
            "the device's proof of the new key does not match".into(),
        ));
    }
    tracing::info!(target = %dev.target(), "signing key rotated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_ls_lines_parse_and_bad_ones_are_refused() {
        let got = parse_ls_lines(b"f 12 main.py\nd 0 app\nf 3 a b.txt\n").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].name.as_str(), got[0].is_dir, got[0].size),
            ("main.py", false, 12)
        );
        assert!(got[1].is_dir);
        assert_eq!(got[2].name, "a b.txt");
        for bad in [&b"x 1 y\n"[..], b"f y\n", b"f -1 y\n", b"f 1 \n"] {
            assert!(
                parse_ls_lines(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
