//! The shared tokio runtime and the blocking bridge for sync methods.

use std::future::Future;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How often a blocking call checks for Ctrl-C (and other Python signals).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The multi-thread runtime shared by sync and async calls.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Run `fut` to completion on the shared runtime with the GIL released.
///
/// The call stays interruptible: Python signal handlers run every
/// [`SIGNAL_POLL`], and when one raises (Ctrl-C raises `KeyboardInterrupt`)
/// the future is dropped and that exception is returned.
///
/// Called on a runtime thread (from a progress callback, say) it raises
/// `RuntimeError` instead of deadlocking or panicking.
pub(crate) fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(PyRuntimeError::new_err(
            "a blocking uota call cannot run on a uota runtime thread (for example in a \
             progress callback); use its *_async twin",
        ));
    }
    py.detach(|| {
        runtime().block_on(async {
            tokio::select! {
                biased;
                res = fut => res,
                err = signal_raised() => Err(err),
            }
        })
    })
}

/// Resolve with the exception of the first Python signal handler that raises.
async fn signal_raised() -> PyErr {
    loop {
        tokio::time::sleep(SIGNAL_POLL).await;
        if let Err(e) = Python::attach(|py| py.check_signals()) {
            return e;
        }
    }
}

/// Spawn blocking (file system) work off the async workers and wait for it.
pub(crate) async fn blocking<T, F>(f: F) -> PyResult<T>
where
    F: FnOnce() -> crate::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PyRuntimeError::new_err(format!("worker failed: {e}")))?
        .map_err(Into::into)
}
