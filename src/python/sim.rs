//! `VirtualDevice`: the MicroPython unix port running the device runtime.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3_async_runtimes::tokio::future_into_py;
use tokio::sync::Mutex;

use super::convert::{repr, PyNone};
use super::runtime::block_on;
use crate::auth::{Password, SigningKey};
use crate::error::Error;
use crate::sim::{self, SimOptions, Storage, VirtualDevice};

type Running = Arc<Mutex<Option<VirtualDevice>>>;

// The `image_size` default in `VirtualDevice.__new__`'s signature (a literal,
// so that Python's `inspect.signature` shows it).
const _: () = assert!(sim::DEFAULT_IMAGE_SIZE == 1_441_792);

/// Every started device, so that interpreter exit can stop the ones still running.
static LIVE: std::sync::Mutex<Vec<Weak<Mutex<Option<VirtualDevice>>>>> =
    std::sync::Mutex::new(Vec::new());

fn track(running: &Running) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(running));
}

async fn start(opts: SimOptions, running: Running) -> PyResult<PyNone> {
    let mut slot = running.lock().await;
    if slot.is_none() {
        *slot = Some(VirtualDevice::start(opts).await?);
        track(&running);
    }
    Ok(PyNone)
}

async fn stop(running: Running) -> PyResult<PyNone> {
    let dev = running.lock().await.take();
    if let Some(dev) = dev {
        dev.stop().await?;
    }
    Ok(PyNone)
}

fn timeout_secs(timeout: f64) -> Result<Duration, Error> {
    if timeout >= 0.0 && timeout.is_finite() {
        Ok(Duration::from_secs_f64(timeout))
    } else {
        Err(Error::InvalidArgument(format!(
            "timeout must be a non-negative number of seconds, not {timeout}"
        )))
    }
}

async fn wait_ready(host: String, port: u16, within: Result<Duration, Error>) -> PyResult<PyNone> {
    sim::wait_for_port(&host, port, within?).await?;
    Ok(PyNone)
}

/// Stop every virtual device still running (registered with `atexit`).
#[pyfunction]
fn _stop_virtual_devices(py: Python<'_>) -> PyResult<()> {
    let live: Vec<Running> = {
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        live.drain(..).filter_map(|w| w.upgrade()).collect()
    };
    for running in live {
        // Best effort: a device whose interpreter already failed has nothing to stop.
        let _ = block_on(py, stop(running));
    }
    Ok(())
}

/// Register the exit hook that stops virtual devices left running.
pub(crate) fn register_atexit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Not added to the module: only `atexit` holds it.
    let hook = wrap_pyfunction!(_stop_virtual_devices, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// A virtual device: the MicroPython unix port running the uota runtime.
#[pyclass(name = "VirtualDevice", module = "uota", frozen)]
pub(crate) struct PyVirtualDevice {
    opts: SimOptions,
    running: Running,
    /// The folder of a device created without `root` or `image`; removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

#[pymethods]
impl PyVirtualDevice {
    /// Describe a virtual device; `start()` provisions and boots it.
    #[new]
    #[pyo3(signature = (root = None, *, image = None, image_size = 1_441_792, host = "127.0.0.1", port = 2018, password = None, signing_key = None, legacy = false, log = None, heap_size = None, interpreter = None, runtime = "py", flash_size = Some(1_441_792), device_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        root: Option<PathBuf>,
        image: Option<PathBuf>,
        image_size: u64,
        host: &str,
        port: u16,
        password: Option<String>,
        signing_key: Option<String>,
        legacy: bool,
        log: Option<PathBuf>,
        heap_size: Option<String>,
        interpreter: Option<PathBuf>,
        runtime: &str,
        flash_size: Option<u64>,
        device_id: Option<String>,
    ) -> PyResult<Self> {
        let (storage, tmp) = match (root, image) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(
                    "give either root (a folder) or image (a littlefs file), not both".into(),
                )
                .into())
            }
            (Some(root), None) => (Storage::Folder(root), None),
            (None, Some(path)) => (
                Storage::Image {
                    path,
                    size: image_size,
                },
                None,
            ),
            (None, None) => {
                let tmp = tempfile::Builder::new()
                    .prefix("uota-sim-")
                    .tempdir()
                    .map_err(|e| Error::io("<tempdir>", e))?;
                (Storage::Folder(tmp.path().to_path_buf()), Some(tmp))
            }
        };
        let mut opts = SimOptions::folder(".", host, port);
        opts.storage = storage;
        opts.password = password.filter(|p| !p.is_empty()).map(Password::new);
        opts.signing_key = signing_key.filter(|k| !k.is_empty()).map(SigningKey::new);
        opts.legacy = legacy;
        opts.log = log;
        opts.heap_size = heap_size;
        opts.interpreter = interpreter;
        opts.runtime_code = runtime.parse()?;
        opts.flash_size = flash_size;
        if let Some(id) = device_id {
            opts.env.push(("UOTA_SIM_ID".into(), id));
        }
        Ok(Self {
            opts,
            running: Arc::new(Mutex::new(None)),
            _tmp: tmp,
        })
    }

    /// The loopback address the device listens on.
    #[getter]
    fn host(&self) -> &str {
        &self.opts.host
    }

    /// The OTA port.
    #[getter]
    fn port(&self) -> u16 {
        self.opts.port
    }

    /// The folder that is the device's filesystem (`None` for an image).
    #[getter]
    fn root(&self) -> Option<PathBuf> {
        match &self.opts.storage {
            Storage::Folder(p) => Some(p.clone()),
            Storage::Image { .. } => None,
        }
    }

    /// The littlefs image file (`None` for a folder).
    #[getter]
    fn image(&self) -> Option<PathBuf> {
        match &self.opts.storage {
            Storage::Folder(_) => None,
            Storage::Image { path, .. } => Some(path.clone()),
        }
    }

    /// Whether `start()` succeeded and `stop()` was not called since.
    #[getter]
    fn running(&self) -> bool {
        match self.running.try_lock() {
            Ok(slot) => slot.is_some(),
            Err(_) => false,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "VirtualDevice(host={}, port={}, running={})",
            repr(py, &self.opts.host),
            self.opts.port,
            if self.running() { "True" } else { "False" }
        )
    }

    /// Provision (first time), boot, and wait until the device accepts connections.
    fn start(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, start(self.opts.clone(), self.running.clone()))
    }

    /// Async `start`.
    fn start_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, start(self.opts.clone(), self.running.clone()))
    }

    /// Stop the interpreter. Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, stop(self.running.clone()))
    }

    /// Async `stop`.
    fn stop_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, stop(self.running.clone()))
    }

    /// Wait until the device accepts connections (e.g. after a reset).
    #[pyo3(signature = (timeout = 20.0))]
    fn wait_ready(&self, py: Python<'_>, timeout: f64) -> PyResult<PyNone> {
        let host = self.opts.host.clone();
        block_on(py, wait_ready(host, self.opts.port, timeout_secs(timeout)))
    }

    /// Async `wait_ready`.
    #[pyo3(signature = (timeout = 20.0))]
    fn wait_ready_async<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let host = self.opts.host.clone();
        future_into_py(py, wait_ready(host, self.opts.port, timeout_secs(timeout)))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.stop(py)?;
        Ok(())
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        let me = slf.clone().unbind();
        let (opts, running) = (slf.get().opts.clone(), slf.get().running.clone());
        future_into_py(py, async move {
            start(opts, running).await?;
            Ok(me)
        })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let running = self.running.clone();
        future_into_py(py, async move {
            stop(running).await?;
            Ok(PyNone)
        })
    }
}
