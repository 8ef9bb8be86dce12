//! The device commands, as callers see them: each one is carried out in
//! the protocol the device speaks ([`super::uota`] or [`super::micro_ota`]).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{micro_ota, uota, Device, DeviceInfo, DirEntry, Peer, GET_MIN_RATE, MAX_GET_BYTES};
use crate::auth::{Password, SigningKey};
use crate::error::{Error, Result};
use crate::manifest::Manifest;

impl Device {
    /// Check that the device answers; returns the round-trip time.
    pub async fn ping(&mut self) -> Result<Duration> {
        let start = Instant::now();
        match self.peer {
            Peer::Uota(_) => uota::ping(self).await?,
            Peer::MicroOta => micro_ota::ping(self).await?,
        }
        Ok(start.elapsed())
    }

    /// The version of the device's active release.
    pub async fn version(&mut self) -> Result<String> {
        match self.peer {
            Peer::Uota(_) => Ok(uota::info(self).await?.version),
            Peer::MicroOta => micro_ota::version(self).await,
        }
    }

    /// Device and release information.
    pub async fn info(&mut self) -> Result<DeviceInfo> {
        match self.peer {
            Peer::Uota(_) => uota::info(self).await,
            Peer::MicroOta => micro_ota::info(self).await,
        }
    }

    /// List a device folder.
    pub async fn ls(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        match self.peer {
            Peer::Uota(_) => uota::ls(self, path).await,
            Peer::MicroOta => micro_ota::ls(self, path).await,
        }
    }

    /// Read a whole device file into memory (see [`Device::get_to`] for the
    /// limits; memory grows only to the size the device announced).
    pub async fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_to(path, &mut out).await?;
        Ok(out)
    }

    /// Stream a device file into `out`; returns its size.
    ///
    /// The device announces the size first: more than [`MAX_GET_BYTES`] is
    /// refused before any byte is read, a byte beyond the announced size
    /// fails the transfer at once, and the whole transfer has a deadline of
    /// the command timeout plus one second per [`GET_MIN_RATE`] bytes, so a
    /// device that trickles or streams forever cannot hold the host.
    pub async fn get_to<W>(&mut self, path: &str, out: &mut W) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Send + ?Sized,
    {
        let size = match self.peer {
            Peer::Uota(_) => uota::get_size(self, path).await?,
            Peer::MicroOta => micro_ota::get_size(self, path).await?,
        };
        if size > MAX_GET_BYTES {
            self.mark_closed();
            return Err(Error::Protocol(format!(
                "get {path}: the device announced {size} bytes, more than the {MAX_GET_BYTES} a file can have on a board"
            )));
        }
        let deadline =
            Instant::now() + self.opts.timeout + Duration::from_secs(size / GET_MIN_RATE);
        let got = match self.peer {
            Peer::Uota(_) => uota::get_body(self, path, size, out, deadline).await?,
            Peer::MicroOta => micro_ota::get_body(self, path, size, out, deadline).await?,
        };
        if got != size {
            return Err(Error::Protocol(format!(
                "get {path}: device announced {size} bytes but sent {got}"
            )));
        }
        out.flush()
            .await
            .map_err(|e| Error::io(std::path::Path::new(path), e))?;
        Ok(size)
    }

    /// Remove a device file.
    pub async fn rm(&mut self, path: &str) -> Result<()> {
        match self.peer {
            Peer::Uota(_) => uota::rm(self, path).await,
            Peer::MicroOta => micro_ota::rm(self, path).await,
        }
    }

    /// Remove the app, keeping the runtime, `/config` and `/data`.
    pub async fn wipe(&mut self) -> Result<()> {
        match self.peer {
            Peer::Uota(_) => uota::wipe(self).await,
            Peer::MicroOta => Err(Error::InvalidArgument(
                "refusing micro-ota's wipe: it deletes /data; push the uota runtime first".into(),
            )),
        }
    }

    /// Set the device's password (`None` clears it). Only the verifier is sent.
    pub async fn passwd(&mut self, new_password: Option<&Password>) -> Result<()> {
        match self.peer {
            Peer::Uota(_) => uota::passwd(self, new_password).await,
            Peer::MicroOta => Err(Error::InvalidArgument(
                "micro-ota devices have no passwd command".into(),
            )),
        }
    }

    /// Reset the device. The connection is closed afterwards.
    pub async fn reset(&mut self) -> Result<()> {
        match self.peer {
            Peer::Uota(_) => uota::reset(self).await?,
            Peer::MicroOta => micro_ota::reset(self).await?,
        }
        self.closed = true;
        Ok(())
    }

    /// Set the device's release-number floor to `release` (lower or higher).
    /// The way out of a floor set too high; a device with a password or key
    /// takes it only in an authenticated session.
    pub async fn set_floor(&mut self, release: u64) -> Result<()> {
        if release > crate::release::MAX_RELEASE {
            return Err(Error::InvalidArgument(format!(
                "a release number is at most 2^53 ({})",
                crate::release::MAX_RELEASE
            )));
        }
        match self.peer {
            Peer::Uota(_) => uota::set_floor(self, release).await,
            Peer::MicroOta => Err(Error::InvalidArgument(
                "micro-ota devices have no release floor".into(),
            )),
        }
    }

    /// The manifest of the device's active release (uota devices only).
    pub async fn active_manifest(&mut self) -> Result<Manifest> {
        match self.peer {
            Peer::Uota(_) => uota::active_manifest(self).await,
            Peer::MicroOta => Err(Error::InvalidArgument(
                "micro-ota devices do not report their manifest".into(),
            )),
        }
    }

    /// Replace the device's signing key `current` with `new`.
    ///
    /// The new key travels encrypted under the current one and bound to this
    /// session's nonce ([`crate::auth::rekey_message`]); the device answers
    /// with a proof that it holds the new key, which is checked here.
    ///
    /// # Errors
    ///
    /// [`Error::SignatureMismatch`] when the device does not hold `current`;
    /// [`Error::Device`] (`no_key`) when it has no signing key yet;
    /// [`Error::Protocol`] when its proof does not match.
    pub async fn rotate_key(&mut self, current: &SigningKey, new: &SigningKey) -> Result<()> {
        match &self.peer {
            Peer::Uota(hello) => {
                let nonce = hello.nonce.clone();
                uota::rotate_key(self, &nonce, current, new).await
            }
            Peer::MicroOta => Err(Error::InvalidArgument(
                "micro-ota devices cannot rotate keys".into(),
            )),
        }
    }
}
