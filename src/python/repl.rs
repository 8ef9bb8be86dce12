//! `uota.Repl`: run code on a board over its serial console (raw REPL).
//!
//! Converts only: every call is one [`crate::repl::Repl`] method.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3_async_runtimes::tokio::future_into_py;
use tokio::sync::Mutex;

use super::convert::{repr, Bytes, Json, PyNone};
use super::errors::closed;
use super::runtime::block_on;
use crate::config::Project;
use crate::repl::bootstrap::{bootstrap, BootstrapOptions};
use crate::repl::fs::{EntryKind, FsOptions, ReplFs};
use crate::repl::info::BoardInfo;
use crate::repl::Repl;
use crate::transport::link::Link;
use crate::transport::serial::SerialTransport;

type Slot = Arc<Mutex<Option<Repl<SerialTransport>>>>;

/// A board's REPL on a serial port.
#[pyclass(name = "Repl", module = "uota", frozen)]
pub(crate) struct PyRepl {
    slot: Slot,
    port: String,
    /// File-agent settings for this port's link.
    fs: FsOptions,
}

async fn open(port: Option<String>, baud: u32, timeout: f64) -> PyResult<PyRepl> {
    if !(timeout > 0.0 && timeout.is_finite()) {
        return Err(crate::Error::InvalidArgument(format!(
            "timeout must be a positive number of seconds, not {timeout}"
        ))
        .into());
    }
    let link = Link::Serial { path: port, baud }.resolve()?;
    let fs = FsOptions::for_link(link.capabilities());
    let Link::Serial {
        path: Some(path), ..
    } = link
    else {
        unreachable!("a resolved serial link names its port")
    };
    let io = SerialTransport::open(&path, baud, Duration::from_secs_f64(timeout)).await?;
    Ok(PyRepl {
        slot: Arc::new(Mutex::new(Some(Repl::new(io)))),
        port: path,
        fs,
    })
}

async fn exec(slot: Slot, code: String) -> PyResult<String> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    Ok(repl.exec(code).await?.stdout_text())
}

async fn eval(slot: Slot, expr: String) -> PyResult<String> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    Ok(repl.eval(&expr).await?)
}

async fn interrupt(slot: Slot) -> PyResult<PyNone> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    repl.interrupt().await?;
    Ok(PyNone)
}

async fn soft_reset(slot: Slot) -> PyResult<PyNone> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    repl.soft_reset().await?;
    Ok(PyNone)
}

async fn board_info(slot: Slot) -> PyResult<Json> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    let info = BoardInfo::read(repl).await?;
    Ok(Json(serde_json::to_value(info).unwrap_or_default()))
}

async fn put(slot: Slot, opts: FsOptions, path: String, data: Vec<u8>) -> PyResult<PyNone> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    let mut fs = ReplFs::open(repl, opts).await?;
    let res = fs.put(&path, &data).await;
    fs.close().await?;
    res?;
    Ok(PyNone)
}

async fn get(slot: Slot, opts: FsOptions, path: String) -> PyResult<Bytes> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    let mut fs = ReplFs::open(repl, opts).await?;
    let res = fs.get(&path).await;
    fs.close().await?;
    Ok(Bytes(res?))
}

async fn ls(slot: Slot, opts: FsOptions, path: String) -> PyResult<Json> {
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    let mut fs = ReplFs::open(repl, opts).await?;
    let res = fs.ls(&path).await;
    fs.close().await?;
    let entries: Vec<serde_json::Value> = res?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "is_dir": e.kind == EntryKind::Dir,
                "size": e.size,
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(entries)))
}

async fn run_bootstrap(
    slot: Slot,
    opts: FsOptions,
    project: Option<std::path::PathBuf>,
    mpy: bool,
) -> PyResult<Json> {
    let project = match project {
        Some(root) => Some(Project::load(&root)?),
        None => None,
    };
    let mut guard = slot.lock().await;
    let repl = guard.as_mut().ok_or_else(closed)?;
    let bopts = BootstrapOptions {
        mpy,
        fs: opts,
        ..BootstrapOptions::default()
    };
    let report = bootstrap(repl, project.as_ref(), &bopts).await?;
    Ok(Json(serde_json::json!({
        "files": report.files,
        "compiled": report.compiled,
        "removed": report.removed,
        "bytes": report.put.bytes,
        "wire_bytes": report.put.wire_bytes,
        "reset": report.reset,
        "board": serde_json::to_value(&report.board).unwrap_or_default(),
    })))
}

async fn close(slot: Slot) -> PyResult<PyNone> {
    let repl = slot.lock().await.take();
    if let Some(mut repl) = repl {
        // Leave the board at its friendly prompt, as a person expects it.
        let _ = repl.leave_raw().await;
    }
    Ok(PyNone)
}

#[pymethods]
impl PyRepl {
    /// Open the serial port `port` (`None`: the one USB-serial board attached).
    #[new]
    #[pyo3(signature = (port = None, *, baud = 115200, timeout = 5.0))]
    fn new(py: Python<'_>, port: Option<String>, baud: u32, timeout: f64) -> PyResult<Self> {
        block_on(py, open(port, baud, timeout))
    }

    /// Async constructor; the awaitable resolves to a `Repl`.
    #[staticmethod]
    #[pyo3(signature = (port = None, *, baud = 115200, timeout = 5.0))]
    fn open_async(
        py: Python<'_>,
        port: Option<String>,
        baud: u32,
        timeout: f64,
    ) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, open(port, baud, timeout))
    }

    /// The serial port.
    #[getter]
    fn port(&self) -> &str {
        &self.port
    }

    /// Run `code` in the raw REPL and return what it printed.
    fn exec(&self, py: Python<'_>, code: String) -> PyResult<String> {
        block_on(py, exec(self.slot.clone(), code))
    }

    /// Async `exec`.
    fn exec_async<'py>(&self, py: Python<'py>, code: String) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, exec(self.slot.clone(), code))
    }

    /// Evaluate `expr` on the board and return its `repr()`.
    fn eval(&self, py: Python<'_>, expr: String) -> PyResult<String> {
        block_on(py, eval(self.slot.clone(), expr))
    }

    /// Async `eval`.
    fn eval_async<'py>(&self, py: Python<'py>, expr: String) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, eval(self.slot.clone(), expr))
    }

    /// Stop the program running on the board (Ctrl-C).
    fn interrupt(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, interrupt(self.slot.clone()))
    }

    /// Soft-reset the board and come back to the raw REPL.
    fn soft_reset(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, soft_reset(self.slot.clone()))
    }

    /// What MicroPython the board runs: version, machine, platform, `mpy`,
    /// free heap and flash, deflate.
    fn board_info(&self, py: Python<'_>) -> PyResult<Json> {
        block_on(py, board_info(self.slot.clone()))
    }

    /// Write `data` to the device file `path` (verified, then renamed into place).
    fn put(&self, py: Python<'_>, path: String, data: Vec<u8>) -> PyResult<PyNone> {
        let opts = self.fs.clone();
        block_on(py, put(self.slot.clone(), opts, path, data))
    }

    /// Read the device file `path`.
    fn get(&self, py: Python<'_>, path: String) -> PyResult<Bytes> {
        let opts = self.fs.clone();
        block_on(py, get(self.slot.clone(), opts, path))
    }

    /// List a device folder: dicts with `name`, `is_dir`, `size`.
    #[pyo3(signature = (path = "/"))]
    fn ls(&self, py: Python<'_>, path: &str) -> PyResult<Json> {
        let opts = self.fs.clone();
        block_on(py, ls(self.slot.clone(), opts, path.to_string()))
    }

    /// Install the uota runtime (and the project's config and secrets) on the
    /// board, then soft-reset it into uota.
    #[pyo3(signature = (project = None, *, mpy = false))]
    fn bootstrap(
        &self,
        py: Python<'_>,
        project: Option<std::path::PathBuf>,
        mpy: bool,
    ) -> PyResult<Json> {
        let opts = self.fs.clone();
        block_on(py, run_bootstrap(self.slot.clone(), opts, project, mpy))
    }

    /// Leave the raw REPL and close the port. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<PyNone> {
        block_on(py, close(self.slot.clone()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)?;
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Repl(port={})", repr(py, &self.port))
    }
}
