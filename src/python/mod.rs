//! Python bindings (feature `python`): the `uota._uota` extension module.
//!
//! This layer only converts: it turns Python arguments into owned Rust values,
//! calls one core function, and turns the result (or the [`crate::Error`]) back
//! into Python objects. Every I/O method exists twice, as in obstore: a
//! blocking one that releases the GIL and runs the core future on the shared
//! tokio runtime ([`runtime::block_on`]), and an `*_async` twin returning an
//! awaitable on the same runtime (`pyo3_async_runtimes::tokio::future_into_py`).

mod convert;
mod device;
mod errors;
mod fleet;
mod manifest;
mod repl;
mod runtime;
mod sim;

use pyo3::prelude::*;

/// Run the `uota` command line with `argv` (program name first); returns the exit code.
///
/// The GIL is released while the command runs.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(|| crate::cli::run(argv))
}

/// The signing key of the device `device_id`, derived from `fleet_key`
/// (see [`crate::auth::FleetKey::derive`]).
#[pyfunction]
fn derive_device_key(fleet_key: &str, device_id: &str) -> String {
    crate::auth::FleetKey::new(fleet_key)
        .derive(device_id)
        .expose()
        .to_string()
}

/// The `uota._uota` extension module.
#[pymodule(gil_used = false)]
fn _uota(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(derive_device_key, m)?)?;
    m.add_function(wrap_pyfunction!(fleet::rollout, m)?)?;
    m.add_function(wrap_pyfunction!(fleet::rollout_async, m)?)?;
    m.add_class::<device::PyDevice>()?;
    m.add_class::<device::PyDirEntry>()?;
    m.add_class::<device::PyOutputListener>()?;
    m.add_class::<device::PyPushReport>()?;
    m.add_class::<manifest::PyManifest>()?;
    m.add_class::<sim::PyVirtualDevice>()?;
    m.add_class::<repl::PyRepl>()?;
    m.add_class::<fleet::PyFleet>()?;
    m.add_class::<fleet::PyFleetDevice>()?;
    m.add_class::<fleet::PyDiscovered>()?;
    m.add_class::<fleet::PyDeviceState>()?;
    m.add_class::<fleet::PyRolloutReport>()?;
    errors::register(m)?;
    sim::register_atexit(m)?;
    Ok(())
}
