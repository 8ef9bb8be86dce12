//! `Device`: a connection to one device, with sync and async methods.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyStopAsyncIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3_async_runtimes::tokio::future_into_py;
use tokio::sync::Mutex;

use super::convert::{py_to_json, repr, to_py, Bytes, Json, PyNone};
use super::errors::closed;
use super::manifest::PyManifest;
use super::runtime::{self, block_on};
use crate::auth::{Password, SigningKey};
use crate::bundle::Bundle;
use crate::config::Project;
use crate::device::{
    ConnectOptions, Device, DirEntry, Link, MicroOtaMethod, Peer, ProtocolChoice, PushEvent,
    PushOptions, PushReport,
};
use crate::error::Error;
use crate::manifest::Manifest;
use crate::protocol::PushMode;
use crate::remoteio::{Caller, Listener, RemoteIoOptions, StopHandle};
use crate::transport::link::DEFAULT_OTA_PORT;

/// The device, shared by sync and async calls; `None` once closed.
type Slot = Arc<Mutex<Option<Device>>>;

type DevFuture<'a, T> = Pin<Box<dyn Future<Output = PyResult<T>> + Send + 'a>>;

/// Run `f` on the device, one call at a time.
///
/// The device is taken out of the slot for the call and put back after it,
/// so a call that is cancelled (asyncio cancellation, Ctrl-C) drops the
/// connection, whose protocol state is unknown, instead of reusing it.
async fn with_device<T, F>(slot: Slot, f: F) -> PyResult<T>
where
    F: for<'a> FnOnce(&'a mut Device) -> DevFuture<'a, T> + Send,
{
    let mut guard = slot.lock().await;
    let mut dev = guard.take().ok_or_else(closed)?;
    let res = f(&mut dev).await;
    *guard = Some(dev);
    res
}

/// The keyword arguments of opening a device (`Device(...)`, `Device.open`,
/// `Device.serial` and their async twins), as the stubs' `_ConnectOptions`
/// names them.
#[derive(Default)]
struct ConnectKwargs {
    password: Option<String>,
    signing_key: Option<String>,
    timeout: Option<f64>,
    protocol: Option<String>,
}

impl<'a, 'py> FromPyObject<'a, 'py> for ConnectKwargs {
    type Error = PyErr;

    /// From the `**options` dict; a key it does not name is a `TypeError`.
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let mut out = ConnectKwargs::default();
        for (key, value) in obj.cast::<PyDict>()?.iter() {
            let key: String = key.extract()?;
            match key.as_str() {
                "password" => out.password = kwarg(&key, &value)?,
                "signing_key" => out.signing_key = kwarg(&key, &value)?,
                "timeout" => out.timeout = kwarg(&key, &value)?,
                "protocol" => out.protocol = kwarg(&key, &value)?,
                other => return Err(unexpected_kwarg(other)),
            }
        }
        Ok(out)
    }
}

impl ConnectKwargs {
    /// The options for a device reached over a link of its own (TCP).
    fn options(&self) -> Result<ConnectOptions, Error> {
        self.build(self.protocol.as_deref().unwrap_or("auto"))
    }

    /// The options for a serial session: it always speaks uota's protocol.
    fn serial_options(&self) -> Result<ConnectOptions, Error> {
        match self.protocol.as_deref() {
            None | Some("uota") => self.build("uota"),
            Some(other) => Err(Error::InvalidArgument(format!(
                "protocol={other:?}: a serial session speaks uota's protocol"
            ))),
        }
    }

    fn build(&self, protocol: &str) -> Result<ConnectOptions, Error> {
        let timeout = self.timeout.unwrap_or(10.0);
        if !(timeout > 0.0 && timeout.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "timeout must be a positive number of seconds, not {timeout}"
            )));
        }
        let protocol = match protocol {
            "auto" => ProtocolChoice::Auto,
            "uota" => ProtocolChoice::Uota,
            "micro-ota" | "microota" => ProtocolChoice::MicroOta,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown protocol {other:?} (expected \"auto\", \"uota\" or \"micro-ota\")"
                )))
            }
        };
        let timeout = Duration::from_secs_f64(timeout);
        Ok(ConnectOptions {
            connect_timeout: timeout,
            timeout,
            password: self
                .password
                .clone()
                .filter(|p| !p.is_empty())
                .map(Password::new),
            protocol,
            signing_key: self
                .signing_key
                .clone()
                .filter(|k| !k.is_empty())
                .map(SigningKey::new),
            ..ConnectOptions::default()
        })
    }
}

/// A keyword argument's value, its `TypeError` naming the argument.
fn kwarg<'py, T: for<'a> FromPyObject<'a, 'py>>(
    key: &str,
    value: &Bound<'py, PyAny>,
) -> PyResult<T> {
    value.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        if e.is_instance_of::<PyTypeError>(value.py()) {
            PyTypeError::new_err(format!("argument '{key}': {e}"))
        } else {
            e
        }
    })
}

fn unexpected_kwarg(name: &str) -> PyErr {
    PyTypeError::new_err(format!("unexpected keyword argument '{name}'"))
}

/// Where `host` says the device is: a whole link (`tcp://…`,
/// `serial://…`) or an address with `port` (2018 when `None`).
fn tcp_or_link(host: String, port: Option<u16>) -> Result<Link, Error> {
    if host.contains("://") {
        if let Some(p) = port {
            return Err(Error::InvalidArgument(format!(
                "{host} is a whole link: leave out port={p}"
            )));
        }
        return host.parse();
    }
    Ok(Link::tcp(host, port.unwrap_or(DEFAULT_OTA_PORT)))
}

/// Open `link` and perform the handshake.
async fn open(
    link: Result<Link, Error>,
    opts: Result<ConnectOptions, Error>,
) -> PyResult<PyDevice> {
    let dev = Device::open(&link?, opts?).await?;
    let (host, port) = match dev.link() {
        Some(Link::Tcp { host, port }) => (host.clone(), *port),
        _ => (dev.target().to_string(), 0),
    };
    let link = dev.link().map(|l| l.to_string()).unwrap_or_default();
    let origin = dev
        .link()
        .map(|l| (l.clone(), dev.connect_options().clone()));
    let protocol = match dev.peer() {
        Peer::Uota(_) => "uota",
        Peer::MicroOta => "micro-ota",
    };
    Ok(PyDevice {
        slot: Arc::new(Mutex::new(Some(dev))),
        host,
        port,
        link,
        origin,
        protocol,
    })
}

/// The keyword arguments of a push (`push`, `push_manifest` and their
/// async twins), as the Python stubs' `_PushOptions` names them.
struct PushKwargs {
    mode: PushMode,
    /// `None`: the default key; `""`: unsigned.
    signing_key: Option<String>,
    reset: bool,
    runtime: bool,
    micro_ota_session: bool,
    delta: bool,
    compress: bool,
    release: Option<u64>,
    rollback: bool,
    wait: Option<Duration>,
    progress: Option<Py<PyAny>>,
}

impl Default for PushKwargs {
    fn default() -> Self {
        let opts = PushOptions::default();
        Self {
            mode: PushMode::Full,
            signing_key: None,
            reset: opts.reset,
            runtime: opts.runtime,
            micro_ota_session: opts.micro_ota_method == MicroOtaMethod::Session,
            delta: opts.delta,
            compress: opts.compress,
            release: None,
            rollback: opts.rollback,
            wait: opts.wait,
            progress: None,
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for PushKwargs {
    type Error = PyErr;

    /// From the `**options` dict; a key it does not name is a `TypeError`,
    /// as for any unexpected keyword argument.
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        use kwarg as field;
        let mut out = PushKwargs::default();
        for (key, value) in obj.cast::<PyDict>()?.iter() {
            let key: String = key.extract()?;
            match key.as_str() {
                "mode" => out.mode = field(&key, &value)?,
                "signing_key" => out.signing_key = field(&key, &value)?,
                "reset" => out.reset = field(&key, &value)?,
                "runtime" => out.runtime = field(&key, &value)?,
                // `legacy_session`: the earlier name, still taken.
                "micro_ota_session" | "legacy_session" => {
                    out.micro_ota_session = field(&key, &value)?
                }
                "delta" => out.delta = field(&key, &value)?,
                "compress" => out.compress = field(&key, &value)?,
                "release" => out.release = field(&key, &value)?,
                "rollback" => out.rollback = field(&key, &value)?,
                "wait" => out.wait = wait_secs(field(&key, &value)?)?,
                "progress" => out.progress = field(&key, &value)?,
                other => return Err(unexpected_kwarg(other)),
            }
        }
        Ok(out)
    }
}

/// `wait=`: seconds; `None` or 0 do not wait.
fn wait_secs(wait: Option<f64>) -> Result<Option<Duration>, Error> {
    match wait {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(secs) if secs.is_finite() && secs > 0.0 => Ok(Some(Duration::from_secs_f64(secs))),
        Some(secs) => Err(Error::InvalidArgument(format!(
            "wait must be a positive number of seconds, 0 or None, not {secs}"
        ))),
    }
}

impl PushKwargs {
    /// `base` (the project's options, or the defaults) with the arguments on
    /// top. An explicit signing key overrides the fleet key; `""` signs with
    /// no `signingKey`.
    fn options(&self, base: PushOptions) -> PushOptions {
        let signing_key = match &self.signing_key {
            None => base.signing_key.clone(),
            Some(k) if k.is_empty() => None,
            Some(k) => Some(SigningKey::new(k.clone())),
        };
        PushOptions {
            mode: self.mode,
            reset: self.reset,
            runtime: self.runtime,
            fleet_key: if signing_key.is_some() {
                None
            } else {
                base.fleet_key.clone()
            },
            signing_key,
            release: self.release.or(base.release),
            rollback: self.rollback,
            micro_ota_method: if self.micro_ota_session {
                MicroOtaMethod::Session
            } else {
                MicroOtaMethod::Stream
            },
            delta: self.delta,
            compress: self.compress,
            wait: self.wait,
            ..base
        }
    }
}

mod ops {
    //! One future per device call, shared by the sync and async methods.

    use super::*;

    pub(super) fn ping(slot: Slot) -> impl Future<Output = PyResult<f64>> + Send {
        with_device(slot, |d| {
            Box::pin(async move { Ok(d.ping().await?.as_secs_f64()) })
        })
    }

    pub(super) fn version(slot: Slot) -> impl Future<Output = PyResult<String>> + Send {
        with_device(slot, |d| Box::pin(async move { Ok(d.version().await?) }))
    }

    pub(super) fn info(slot: Slot) -> impl Future<Output = PyResult<Json>> + Send {
        with_device(slot, |d| {
            Box::pin(async move {
                let info = d.info().await?;
                let value = serde_json::to_value(info)
                    .map_err(|e| Error::Protocol(format!("info: {e}")))?;
                Ok(Json(value))
            })
        })
    }

    pub(super) fn ls(
        slot: Slot,
        path: String,
    ) -> impl Future<Output = PyResult<Vec<PyDirEntry>>> + Send {
        with_device(slot, move |d| {
            Box::pin(async move {
                let entries = d.ls(&path).await?;
                Ok(entries.into_iter().map(PyDirEntry::from).collect())
            })
        })
    }

    pub(super) fn get(slot: Slot, path: String) -> impl Future<Output = PyResult<Bytes>> + Send {
        with_device(slot, move |d| {
            Box::pin(async move { Ok(Bytes(d.get(&path).await?)) })
        })
    }

    pub(super) fn rm(slot: Slot, path: String) -> impl Future<Output = PyResult<PyNone>> + Send {
        with_device(slot, move |d| {
            Box::pin(async move {
                d.rm(&path).await?;
                Ok(PyNone)
            })
        })
    }

    pub(super) fn reset(slot: Slot) -> impl Future<Output = PyResult<PyNone>> + Send {
        with_device(slot, |d| {
            Box::pin(async move {
                d.reset().await?;
                Ok(PyNone)
            })
        })
    }

    pub(super) fn wipe(slot: Slot) -> impl Future<Output = PyResult<PyNone>> + Send {
        with_device(slot, |d| {
            Box::pin(async move {
                d.wipe().await?;
                Ok(PyNone)
            })
        })
    }

    pub(super) fn passwd(
        slot: Slot,
        new_password: Option<String>,
    ) -> impl Future<Output = PyResult<PyNone>> + Send {
        let new = new_password.filter(|p| !p.is_empty()).map(Password::new);
        with_device(slot, move |d| {
            Box::pin(async move {
                d.passwd(new.as_ref()).await?;
                Ok(PyNone)
            })
        })
    }

    /// A RemoteIO call on the device's connection, resent with its id over
    /// a new one after a link drop (which then becomes the device's).
    pub(super) async fn call(
        slot: Slot,
        name: String,
        args: serde_json::Map<String, serde_json::Value>,
    ) -> PyResult<Json> {
        let mut guard = slot.lock().await;
        let dev = guard.take().ok_or_else(closed)?;
        let mut caller = Caller::with_device(dev, RemoteIoOptions::default());
        let res = caller.call(&name, args).await;
        *guard = caller.into_device();
        Ok(Json(res?.value))
    }

    pub(super) async fn close(slot: Slot) -> PyResult<PyNone> {
        // A serial session says bye (the board resets into its app); a TCP
        // connection just closes.
        let dev = slot.lock().await.take();
        if let Some(dev) = dev {
            dev.close().await?;
        }
        Ok(PyNone)
    }

    pub(super) async fn push_project(
        slot: Slot,
        project: PathBuf,
        version: Option<String>,
        args: PushKwargs,
    ) -> PyResult<PyPushReport> {
        let mode = args.mode;
        let (project, bundle) = runtime::blocking(move || {
            let project = Project::load(&project)?;
            let mut bundle = Bundle::for_push(&project, mode, false)?;
            if let Some(v) = version {
                bundle.set_version(v);
            }
            Ok((project, bundle))
        })
        .await?;
        let opts = args.options(PushOptions::for_project(&project, mode));
        push(slot, bundle, opts, args.progress).await
    }

    pub(super) async fn push_manifest(
        slot: Slot,
        root: PathBuf,
        manifest: Manifest,
        args: PushKwargs,
    ) -> PyResult<PyPushReport> {
        let opts = args.options(PushOptions::default());
        push(slot, Bundle::from_dir(&root, manifest), opts, args.progress).await
    }

    async fn push(
        slot: Slot,
        bundle: Bundle,
        opts: PushOptions,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<PyPushReport> {
        with_device(slot, move |d| {
            Box::pin(async move {
                let mut raised: Option<PyErr> = None;
                let mut on_event = |ev: &PushEvent| {
                    let (Some(cb), None) = (&progress, &raised) else {
                        return;
                    };
                    let res = Python::attach(|py| cb.call1(py, (to_py(py, ev)?,)).map(drop));
                    if let Err(e) = res {
                        raised = Some(e);
                    }
                };
                let report = d.push_bundle(&bundle, &opts, &mut on_event).await;
                let report = report?;
                match raised {
                    Some(e) => Err(e),
                    None => Ok(PyPushReport::from(report)),
                }
            })
        })
        .await
    }
}

/// A connection to one device over WiFi TCP.
#[pyclass(name = "Device", module = "uota", frozen)]
pub(crate) struct PyDevice {
    slot: Slot,
    host: String,
    port: u16,
    link: String,
    /// The link and options it was opened with (listeners open their own).
    origin: Option<(Link, ConnectOptions)>,
    protocol: &'static str,
}

/// The keyword arguments of `call` as JSON; one without a JSON form is a
/// `TypeError` naming it.
fn call_args(
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    let mut args = serde_json::Map::new();
    for (key, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = key.extract()?;
        let v = py_to_json(&value)
            .map_err(|e| PyTypeError::new_err(format!("argument '{key}': {e}")))?;
        args.insert(key, v);
    }
    Ok(args)
}

/// `outage=`: a positive number of seconds.
fn outage_secs(outage: f64) -> Result<Duration, Error> {
    match Duration::try_from_secs_f64(outage) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::InvalidArgument(format!(
            "outage must be a positive number of seconds, not {outage}"
        ))),
    }
}

/// Events a listener queues before a slow consumer is told it missed some.
const LISTEN_QUEUE: usize = 1024;

impl PyDevice {
    /// A listener on a connection of its own to the device.
    fn listener(&self, outage: f64) -> PyResult<PyOutputListener> {
        let outage_after = outage_secs(outage)?;
        let Some((link, connect)) = self.origin.clone() else {
            return Err(
                Error::InvalidArgument("this Device was not opened from a link".into()).into(),
            );
        };
        if link.is_serial() {
            return Err(Error::InvalidArgument(
                "listen opens a connection of its own, and the serial port is this Device's: \
                 listen over the network (tcp://…), or close the Device and listen with \
                 `uota remoteio listen`"
                    .into(),
            )
            .into());
        }
        let opts = RemoteIoOptions {
            outage_after,
            ..RemoteIoOptions::default()
        };
        let _rt = runtime::runtime().enter();
        let listener = Listener::spawn(link, connect, opts, LISTEN_QUEUE);
        Ok(PyOutputListener {
            stop: listener.stop_handle(),
            inner: Arc::new(Mutex::new(listener)),
        })
    }
}

#[pymethods]
impl PyDevice {
    /// Connect to `host:port` and perform the handshake (blocking).
    /// `host` may also be a whole link (`tcp://…`, `serial://…`); `options`
    /// are the keyword arguments of opening a device (`ConnectKwargs`).
    #[new]
    #[pyo3(signature = (host, port = None, **options))]
    fn new(
        py: Python<'_>,
        host: String,
        port: Option<u16>,
        options: Option<ConnectKwargs>,
    ) -> PyResult<Self> {
        let opts = options.unwrap_or_default().options();
        block_on(py, open(tcp_or_link(host, port), opts))
    }

    /// Connect asynchronously; the awaitable resolves to a `Device`.
    #[staticmethod]
    #[pyo3(signature = (host, port = None, **options))]
    fn connect_async<'py>(
        py: Python<'py>,
        host: String,
        port: Option<u16>,
        options: Option<ConnectKwargs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = options.unwrap_or_default().options();
        future_into_py(py, open(tcp_or_link(host, port), opts))
    }

    /// Open the device a link names (blocking): `tcp://host[:port]`,
    /// `serial:///dev/ttyUSB0[?baud=N]` or `serial://auto`.
    #[staticmethod]
    #[pyo3(signature = (target, **options))]
    fn open(py: Python<'_>, target: &str, options: Option<ConnectKwargs>) -> PyResult<Self> {
        let opts = options.unwrap_or_default().options();
        block_on(py, open(target.parse(), opts))
    }

    /// Async `open`; the awaitable resolves to a `Device`.
    #[staticmethod]
    #[pyo3(signature = (target, **options))]
    fn open_async<'py>(
        py: Python<'py>,
        target: &str,
        options: Option<ConnectKwargs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = options.unwrap_or_default().options();
        future_into_py(py, open(target.parse(), opts))
    }

    /// Open an OTA session on a board's serial console (blocking).
    ///
    /// `port` is the serial port (`/dev/ttyUSB0`, `COM3`); `None` picks the
    /// one USB-serial board attached.
    #[staticmethod]
    #[pyo3(signature = (port = None, *, baud = 115200, **options))]
    fn serial(
        py: Python<'_>,
        port: Option<String>,
        baud: u32,
        options: Option<ConnectKwargs>,
    ) -> PyResult<Self> {
        let opts = options.unwrap_or_default().serial_options();
        block_on(py, open(Ok(Link::Serial { path: port, baud }), opts))
    }

    /// Async `serial`; the awaitable resolves to a `Device`.
    #[staticmethod]
    #[pyo3(signature = (port = None, *, baud = 115200, **options))]
    fn serial_async<'py>(
        py: Python<'py>,
        port: Option<String>,
        baud: u32,
        options: Option<ConnectKwargs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = options.unwrap_or_default().serial_options();
        future_into_py(py, open(Ok(Link::Serial { path: port, baud }), opts))
    }

    /// The link the device was opened on, as a string (`tcp://…`, `serial://…`).
    #[getter]
    fn link(&self) -> &str {
        &self.link
    }

    /// The address connected to.
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    /// The port connected to.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The protocol the device speaks: `"uota"` or `"micro-ota"`.
    #[getter]
    fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// Whether `close()` was called (or a call was cancelled).
    #[getter]
    fn closed(&self) -> bool {
        match self.slot.try_lock() {
            Ok(guard) => guard.is_none(),
            Err(_) => false,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Device(host={}, port={}, protocol={})",
            repr(py, &self.host),
            self.port,
            repr(py, self.protocol)
        )
    }

    /// Check that the device answers; returns the round trip in seconds.
    fn ping(&self, py: Python<'_>) -> PyResult<f64> {
        block_on(py, ops::ping(self.slot.clone()))
    }

    /// Async `ping`.
    fn ping_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::ping(self.slot.clone()))
    }

    /// The version of the device's active release.
    fn version(&self, py: Python<'_>) -> PyResult<String> {
        block_on(py, ops::version(self.slot.clone()))
    }

    /// Async `version`.
    fn version_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::version(self.slot.clone()))
    }

    /// What the device reports about itself, as a dict.
    fn info(&self, py: Python<'_>) -> PyResult<Json> {
        block_on(py, ops::info(self.slot.clone()))
    }

    /// Async `info`.
    fn info_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::info(self.slot.clone()))
    }

    /// List a device folder.
    #[pyo3(signature = (path = "/"))]
    fn ls(&self, py: Python<'_>, path: &str) -> PyResult<Vec<PyDirEntry>> {
        block_on(py, ops::ls(self.slot.clone(), path.to_string()))
    }

    /// Async `ls`.
    #[pyo3(signature = (path = "/"))]
    fn ls_async<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::ls(self.slot.clone(), path.to_string()))
    }

    /// Read a whole device file.
    fn get(&self, py: Python<'_>, path: String) -> PyResult<Bytes> {
        block_on(py, ops::get(self.slot.clone(), path))
    }

    /// Async `get`.
    fn get_async<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::get(self.slot.clone(), path))
    }

    /// Remove a device file.
    fn rm(&self, py: Python<'_>, path: String) -> PyResult<PyNone> {
        block_on(py, ops::rm(self.slot.clone(), path))
    }

    /// Async `rm`.
    fn rm_async<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::rm(self.slot.clone(), path))
    }

    /// Reset the device; the connection is unusable afterwards.
    fn reset(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, ops::reset(self.slot.clone()))
    }

    /// Async `reset`.
    fn reset_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::reset(self.slot.clone()))
    }

    /// Remove the app, keeping the runtime, `/config` and `/data`.
    fn wipe(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, ops::wipe(self.slot.clone()))
    }

    /// Async `wipe`.
    fn wipe_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::wipe(self.slot.clone()))
    }

    /// Set the device password (`None` or `""` clears it).
    fn passwd(&self, py: Python<'_>, new_password: Option<String>) -> PyResult<PyNone> {
        block_on(py, ops::passwd(self.slot.clone(), new_password))
    }

    /// Async `passwd`.
    fn passwd_async<'py>(
        &self,
        py: Python<'py>,
        new_password: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::passwd(self.slot.clone(), new_password))
    }

    /// Push the project in `project` (its `config/ota.json` selects the
    /// files); `options` are the keyword arguments of a push (`PushKwargs`).
    #[pyo3(signature = (project, *, version = None, **options))]
    fn push(
        &self,
        py: Python<'_>,
        project: PathBuf,
        version: Option<String>,
        options: Option<PushKwargs>,
    ) -> PyResult<PyPushReport> {
        let args = options.unwrap_or_default();
        block_on(
            py,
            ops::push_project(self.slot.clone(), project, version, args),
        )
    }

    /// Async `push`.
    #[pyo3(signature = (project, *, version = None, **options))]
    fn push_async<'py>(
        &self,
        py: Python<'py>,
        project: PathBuf,
        version: Option<String>,
        options: Option<PushKwargs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = options.unwrap_or_default();
        future_into_py(
            py,
            ops::push_project(self.slot.clone(), project, version, args),
        )
    }

    /// Push the files of `manifest`, read from the folder `root`.
    #[pyo3(signature = (root, manifest, **options))]
    fn push_manifest(
        &self,
        py: Python<'_>,
        root: PathBuf,
        manifest: &Bound<'_, PyManifest>,
        options: Option<PushKwargs>,
    ) -> PyResult<PyPushReport> {
        let args = options.unwrap_or_default();
        let manifest = manifest.get().snapshot();
        block_on(
            py,
            ops::push_manifest(self.slot.clone(), root, manifest, args),
        )
    }

    /// Async `push_manifest`.
    #[pyo3(signature = (root, manifest, **options))]
    fn push_manifest_async<'py>(
        &self,
        py: Python<'py>,
        root: PathBuf,
        manifest: &Bound<'py, PyManifest>,
        options: Option<PushKwargs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = options.unwrap_or_default();
        let manifest = manifest.get().snapshot();
        future_into_py(
            py,
            ops::push_manifest(self.slot.clone(), root, manifest, args),
        )
    }

    /// Call the handler `name` the device's app registered
    /// (`@remoteio.on(name)`) with `kwargs`; returns its result.
    #[pyo3(signature = (name, /, **kwargs))]
    fn call(
        &self,
        py: Python<'_>,
        name: String,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Json> {
        let args = call_args(kwargs)?;
        block_on(py, ops::call(self.slot.clone(), name, args))
    }

    /// Async `call`.
    #[pyo3(signature = (name, /, **kwargs))]
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        name: String,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = call_args(kwargs)?;
        future_into_py(py, ops::call(self.slot.clone(), name, args))
    }

    /// The device's output, one event per iteration, across link drops.
    #[pyo3(signature = (*, outage = 10.0))]
    fn listen(&self, outage: f64) -> PyResult<PyOutputListener> {
        self.listener(outage)
    }

    /// `listen` as an async iterator.
    #[pyo3(signature = (*, outage = 10.0))]
    fn listen_async(&self, outage: f64) -> PyResult<PyOutputListener> {
        self.listener(outage)
    }

    /// Close the connection (waits for a call in progress). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, ops::close(self.slot.clone()))
    }

    /// Async `close`.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, ops::close(self.slot.clone()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)?;
        Ok(())
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.unbind();
        future_into_py(py, async move { Ok(me) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let slot = self.slot.clone();
        future_into_py(py, async move {
            ops::close(slot).await?;
            Ok(PyNone)
        })
    }
}

/// The device's output as `Device.listen` yields it (a listener running on
/// a connection of its own).
#[pyclass(name = "OutputListener", module = "uota", frozen)]
pub(crate) struct PyOutputListener {
    inner: Arc<Mutex<Listener>>,
    stop: StopHandle,
}

impl Drop for PyOutputListener {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// The next event of `inner` as a dict; `None` once it ended.
async fn next_event(inner: Arc<Mutex<Listener>>) -> PyResult<Option<Json>> {
    match inner.lock().await.next().await {
        Some(ev) => Ok(Some(Json(ev?.to_json()))),
        None => Ok(None),
    }
}

async fn close_listener(inner: Arc<Mutex<Listener>>, stop: StopHandle) -> PyResult<PyNone> {
    stop.stop();
    inner.lock().await.close().await;
    Ok(PyNone)
}

#[pymethods]
impl PyOutputListener {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Json>> {
        block_on(py, next_event(self.inner.clone()))
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            match next_event(inner).await? {
                Some(ev) => Ok(ev),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    /// Stop listening and close the connection. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, close_listener(self.inner.clone(), self.stop.clone()))
    }

    /// Async `close`.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, close_listener(self.inner.clone(), self.stop.clone()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)?;
        Ok(())
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.unbind();
        future_into_py(py, async move { Ok(me) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, close_listener(self.inner.clone(), self.stop.clone()))
    }

    fn __repr__(&self) -> &'static str {
        "OutputListener()"
    }
}

/// One entry of a device folder listing.
#[pyclass(name = "DirEntry", module = "uota", frozen, eq, hash)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PyDirEntry {
    /// Name within the folder.
    #[pyo3(get)]
    name: String,
    /// Whether it is a folder.
    #[pyo3(get)]
    is_dir: bool,
    /// Size in bytes (0 for folders).
    #[pyo3(get)]
    size: u64,
}

impl From<DirEntry> for PyDirEntry {
    fn from(e: DirEntry) -> Self {
        Self {
            name: e.name,
            is_dir: e.is_dir,
            size: e.size,
        }
    }
}

#[pymethods]
impl PyDirEntry {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "DirEntry(name={}, is_dir={}, size={})",
            repr(py, &self.name),
            if self.is_dir { "True" } else { "False" },
            self.size
        )
    }
}

/// What a push did.
#[pyclass(name = "PushReport", module = "uota", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct PyPushReport {
    /// Version of the committed release.
    #[pyo3(get)]
    version: String,
    /// Release number it was signed with.
    #[pyo3(get)]
    release: u64,
    /// Files in the release.
    #[pyo3(get)]
    files_total: usize,
    /// Files sent.
    #[pyo3(get)]
    files_sent: usize,
    /// Files not sent (unchanged on the device, or staged by an interrupted push).
    #[pyo3(get)]
    files_skipped: usize,
    /// File bytes sent, before compression.
    #[pyo3(get)]
    file_bytes: u64,
    /// File bytes as they crossed the link.
    #[pyo3(get)]
    payload_bytes: u64,
    /// Whether an interrupted push was resumed.
    #[pyo3(get)]
    resumed: bool,
    /// Whether payloads were compressed.
    #[pyo3(get)]
    compressed: bool,
    /// Bytes written to the link in all.
    #[pyo3(get)]
    wire_bytes: u64,
    /// Wall time of the push, in seconds (the wait for the restart included).
    #[pyo3(get)]
    elapsed: f64,
    /// Bytes read from the link during the push.
    #[pyo3(get)]
    received_bytes: u64,
    /// Whether the device already ran this release (nothing committed).
    #[pyo3(get)]
    up_to_date: bool,
    /// Seconds the device took to answer again after its reset (None when
    /// the push did not wait for it).
    #[pyo3(get)]
    restart: Option<f64>,
}

impl From<PushReport> for PyPushReport {
    fn from(r: PushReport) -> Self {
        Self {
            version: r.version,
            release: r.release,
            files_total: r.files_total,
            files_sent: r.files_sent,
            files_skipped: r.files_skipped,
            file_bytes: r.file_bytes,
            payload_bytes: r.payload_bytes,
            resumed: r.resumed,
            compressed: r.compressed,
            wire_bytes: r.wire_bytes,
            elapsed: r.elapsed.as_secs_f64(),
            up_to_date: r.up_to_date,
            received_bytes: r.received_bytes,
            restart: r.restart.map(|d| d.as_secs_f64()),
        }
    }
}

#[pymethods]
impl PyPushReport {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "PushReport(version={}, release={}, files_sent={}, files_skipped={}, file_bytes={}, payload_bytes={}, wire_bytes={}, elapsed={:.3})",
            repr(py, &self.version),
            self.release,
            self.files_sent,
            self.files_skipped,
            self.file_bytes,
            self.payload_bytes,
            self.wire_bytes,
            self.elapsed
        )
    }
}
