//! A synchronous wrapper over [`Device`].

use std::path::Path;
use std::time::Duration;

use super::{
    ConnectOptions, Device, DeviceInfo, DirEntry, Peer, PushEvent, PushOptions, PushReport,
};
use crate::auth::Password;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// A [`Device`] driven from synchronous code; each call blocks until done.
#[derive(Debug)]
pub struct BlockingDevice {
    rt: tokio::runtime::Runtime,
    inner: Device,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("<tokio runtime>", e))
}

impl BlockingDevice {
    /// Connect over WiFi TCP; see [`Device::connect_tcp`].
    pub fn connect_tcp(host: &str, port: u16, opts: ConnectOptions) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(Device::connect_tcp(host, port, opts))?;
        Ok(Self { rt, inner })
    }

    /// The async device inside.
    pub fn as_async(&mut self) -> &mut Device {
        &mut self.inner
    }

    /// The protocol the device speaks.
    pub fn peer(&self) -> &Peer {
        self.inner.peer()
    }

    /// See [`Device::ping`].
    pub fn ping(&mut self) -> Result<Duration> {
        self.rt.block_on(self.inner.ping())
    }

    /// See [`Device::version`].
    pub fn version(&mut self) -> Result<String> {
        self.rt.block_on(self.inner.version())
    }

    /// See [`Device::info`].
    pub fn info(&mut self) -> Result<DeviceInfo> {
        self.rt.block_on(self.inner.info())
    }

    /// See [`Device::ls`].
    pub fn ls(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        self.rt.block_on(self.inner.ls(path))
    }

    /// See [`Device::get`].
    pub fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.inner.get(path))
    }

    /// See [`Device::rm`].
    pub fn rm(&mut self, path: &str) -> Result<()> {
        self.rt.block_on(self.inner.rm(path))
    }

    /// See [`Device::wipe`].
    pub fn wipe(&mut self) -> Result<()> {
        self.rt.block_on(self.inner.wipe())
    }

    /// See [`Device::passwd`].
    pub fn passwd(&mut self, new_password: Option<&Password>) -> Result<()> {
        self.rt.block_on(self.inner.passwd(new_password))
    }

    /// See [`Device::reset`].
    pub fn reset(&mut self) -> Result<()> {
        self.rt.block_on(self.inner.reset())
    }

    /// See [`Device::push`].
    pub fn push(
        &mut self,
        root: &Path,
        manifest: &Manifest,
        opts: &PushOptions,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<PushReport> {
        self.rt
            .block_on(self.inner.push(root, manifest, opts, progress))
    }
}
