//! The exception tree: `UotaError` and one subclass per [`ErrorKind`].
//!
//! The classes are created at import with `type(name, bases, dict)` so that a
//! class can also derive from the builtin it resembles (`UotaTimeoutError` is
//! a `TimeoutError`, `TransportError` a `ConnectionError`, `LocalIOError` an
//! `OSError`, `InvalidArgument` and `InvalidPath` are `ValueError`s). Fields
//! of the Rust variant become attributes of the exception.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::{Error, ErrorKind};

/// Module the classes say they live in (they are re-exported there).
const MODULE: &str = "uota";

struct Spec {
    name: &'static str,
    kind: ErrorKind,
    builtin: Option<&'static str>,
    doc: &'static str,
}

const BASE_DOC: &str = "Base class of every error uota raises.";

const SPECS: &[Spec] = &[
    Spec {
        name: "TransportError",
        kind: ErrorKind::Transport,
        builtin: Some("ConnectionError"),
        doc:
            "Connecting to the device or moving bytes failed, or the device closed the connection.",
    },
    Spec {
        name: "UotaTimeoutError",
        kind: ErrorKind::Timeout,
        builtin: Some("TimeoutError"),
        doc: "The device did not answer in time.",
    },
    Spec {
        name: "ProtocolError",
        kind: ErrorKind::Protocol,
        builtin: None,
        doc: "The bytes received do not follow the protocol (or a manifest is malformed).",
    },
    Spec {
        name: "DeviceError",
        kind: ErrorKind::Device,
        builtin: None,
        doc: "The device refused a request; see `op`, `code` and `message`.",
    },
    Spec {
        name: "SignatureMismatch",
        kind: ErrorKind::SignatureMismatch,
        builtin: None,
        doc: "The release signature is missing or does not match the signing key.",
    },
    Spec {
        name: "ReleaseRefused",
        kind: ErrorKind::ReleaseRefused,
        builtin: None,
        doc: "The device refused a signed release not meant for it; `reason` is `downgrade`, `wrong_device` or `incompatible`.",
    },
    Spec {
        name: "HashMismatch",
        kind: ErrorKind::HashMismatch,
        builtin: None,
        doc: "A file's content did not match its SHA-256.",
    },
    Spec {
        name: "AuthError",
        kind: ErrorKind::Auth,
        builtin: None,
        doc: "Authentication with the device failed (wrong or missing password).",
    },
    Spec {
        name: "InvalidPath",
        kind: ErrorKind::InvalidPath,
        builtin: Some("ValueError"),
        doc: "A path was refused: traversal, absolute, too long, or protected on the device.",
    },
    Spec {
        name: "ConfigError",
        kind: ErrorKind::Config,
        builtin: None,
        doc: "A project configuration file is missing or malformed.",
    },
    Spec {
        name: "LocalIOError",
        kind: ErrorKind::Io,
        builtin: Some("OSError"),
        doc: "Reading or writing a local file failed.",
    },
    Spec {
        name: "InterpreterMissing",
        kind: ErrorKind::InterpreterMissing,
        builtin: None,
        doc: "The MicroPython unix port needed for virtual devices was not found.",
    },
    Spec {
        name: "InvalidArgument",
        kind: ErrorKind::InvalidArgument,
        builtin: Some("ValueError"),
        doc: "An argument or option is not valid.",
    },
    Spec {
        name: "Cancelled",
        kind: ErrorKind::Cancelled,
        builtin: None,
        doc: "The operation was cancelled; the message says what state the device was left in.",
    },
    Spec {
        name: "WrongDevice",
        kind: ErrorKind::WrongDevice,
        builtin: None,
        doc: "Another device than the inventory expects answered at an address; see `name`, `target`, `expected` and `found`.",
    },
];

struct Classes {
    base: Py<PyType>,
    kinds: Vec<Py<PyType>>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn new_class<'py>(
    py: Python<'py>,
    name: &str,
    doc: &str,
    bases: Vec<Bound<'py, PyAny>>,
) -> PyResult<Py<PyType>> {
    let dict = PyDict::new(py);
    dict.set_item("__module__", MODULE)?;
    dict.set_item("__doc__", doc)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, PyTuple::new(py, bases)?, dict))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let builtins = py.import("builtins")?;
        let base = new_class(
            py,
            "UotaError",
            BASE_DOC,
            vec![builtins.getattr("Exception")?],
        )?;
        let kinds = SPECS
            .iter()
            .map(|spec| {
                let mut bases = vec![base.bind(py).clone().into_any()];
                if let Some(b) = spec.builtin {
                    bases.push(builtins.getattr(b)?);
                }
                new_class(py, spec.name, spec.doc, bases)
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Classes { base, kinds })
    })
}

/// Add `UotaError` and its subclasses to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let c = classes(py)?;
    m.add("UotaError", c.base.bind(py))?;
    for (spec, class) in SPECS.iter().zip(&c.kinds) {
        m.add(spec.name, class.bind(py))?;
    }
    Ok(())
}

fn class_for(py: Python<'_>, kind: ErrorKind) -> PyResult<Bound<'_, PyType>> {
    let c = classes(py)?;
    let i = SPECS
        .iter()
        .position(|s| s.kind == kind)
        .expect("every ErrorKind has an exception class");
    Ok(c.kinds[i].bind(py).clone())
}

fn build<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let exc = class_for(py, e.kind())?.call1((e.to_string(),))?;
    match e {
        Error::Transport { target, source } => {
            exc.setattr("target", target)?;
            exc.setattr("errno", source.raw_os_error())?;
        }
        Error::ConnectionClosed { .. } => exc.setattr("target", py.None())?,
        Error::Timeout { what, after } => {
            exc.setattr("what", what)?;
            exc.setattr("after", after.as_secs_f64())?;
        }
        Error::Device { op, code, message } => {
            exc.setattr("op", op)?;
            exc.setattr("code", code.as_str())?;
            exc.setattr("message", message)?;
        }
        Error::HashMismatch { path } => exc.setattr("path", path)?,
        Error::DeviceException {
            exception,
            message,
            traceback,
        } => {
            exc.setattr("op", "exec")?;
            exc.setattr("code", "exception")?;
            exc.setattr("exception", exception)?;
            exc.setattr("message", message)?;
            exc.setattr("traceback", traceback)?;
        }
        Error::ReleaseRefused { reason, message } => {
            exc.setattr("reason", reason)?;
            exc.setattr("message", message)?;
        }
        Error::InvalidPath { path, reason } => {
            exc.setattr("path", path)?;
            exc.setattr("reason", reason)?;
        }
        Error::Config { path, .. } => exc.setattr("path", path.display().to_string())?,
        Error::Io { path, source } => {
            exc.setattr("path", path.display().to_string())?;
            exc.setattr("errno", source.raw_os_error())?;
        }
        Error::WrongDevice {
            name,
            target,
            expected,
            found,
        } => {
            exc.setattr("name", name)?;
            exc.setattr("target", target)?;
            exc.setattr("expected", expected)?;
            exc.setattr("found", found)?;
        }
        // Variants whose message says it all.
        _ => {}
    }
    Ok(exc)
}

/// Turn a core error into the matching Python exception.
pub(crate) fn to_py_err(e: Error) -> PyErr {
    Python::attach(|py| match build(py, &e) {
        Ok(exc) => PyErr::from_value(exc),
        Err(failed) => failed,
    })
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        to_py_err(e)
    }
}

/// The `TransportError` for a call on a closed `Device`.
pub(crate) fn closed() -> PyErr {
    Python::attach(|py| {
        let msg = "the Device is closed (by close(), or by a cancelled or interrupted call); connect again";
        match class_for(py, ErrorKind::Transport).and_then(|c| c.call1((msg,))) {
            Ok(exc) => {
                let _ = exc.setattr("target", py.None());
                PyErr::from_value(exc)
            }
            Err(failed) => failed,
        }
    })
}
