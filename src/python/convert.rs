//! Small result wrappers that convert to the right Python type.

use std::convert::Infallible;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::error::Error;
use crate::fleet::{Resume, Size, Threshold};

/// `None` (a bare `()` would become an empty tuple through `future_into_py`).
pub(crate) struct PyNone;

impl<'py> IntoPyObject<'py> for PyNone {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(py.None().into_bound(py))
    }
}

/// Bytes that become `bytes` (a `Vec<u8>` would become a `list[int]`).
pub(crate) struct Bytes(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// A JSON value that becomes the matching Python value (`dict`, `list`, …).
pub(crate) struct Json(pub serde_json::Value);

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        json_to_py(py, &self.0)
    }
}

/// Convert a JSON value to Python objects.
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Convert Python objects (`dict` with `str` keys, `list`, `tuple`, `str`,
/// `int`, `float`, `bool`, `None`) to a JSON value; another type is a
/// `TypeError`.
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    if obj.is_none() {
        Ok(Value::Null)
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Ok(Value::Bool(b.is_true()))
    } else if obj.cast::<PyInt>().is_ok() {
        match obj.extract::<i64>() {
            Ok(i) => Ok(i.into()),
            Err(_) => Ok(obj.extract::<u64>()?.into()),
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| PyTypeError::new_err("NaN and infinities have no JSON form"))
    } else if let Ok(s) = obj.cast::<PyString>() {
        Ok(Value::String(s.to_cow()?.into_owned()))
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("dict keys must be str"))?;
            map.insert(key.to_cow()?.into_owned(), py_to_json(&v)?);
        }
        Ok(Value::Object(map))
    } else if let Ok(l) = obj.cast::<PyList>() {
        l.iter().map(|v| py_to_json(&v)).collect()
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        t.iter().map(|v| py_to_json(&v)).collect()
    } else {
        Err(PyTypeError::new_err(format!(
            "{} has no JSON form",
            obj.get_type().name()?
        )))
    }
}

/// Serialize `value` with serde and convert it to Python objects.
pub(crate) fn to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let v = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &v)
}

/// Python's `repr()` of a string, for `__repr__` methods.
pub(crate) fn repr(py: Python<'_>, s: &str) -> String {
    pyo3::types::PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// `"full"` or `"fast"`; another string is an `InvalidArgument`.
impl<'a, 'py> FromPyObject<'a, 'py> for crate::protocol::PushMode {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name: String = obj.extract()?;
        Ok(name.parse()?)
    }
}

/// `max_failures=`: a number of devices (`int`) or a text as `--max-failures`
/// takes it (`"3"`, `"10%"`); a bad one is an `InvalidArgument`.
impl<'a, 'py> FromPyObject<'a, 'py> for Threshold {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = obj.cast::<PyString>() {
            return Ok(text.to_cow()?.parse()?);
        }
        if obj.cast::<PyBool>().is_ok() || obj.cast::<PyInt>().is_err() {
            return Err(PyTypeError::new_err(
                "max_failures is a number of devices (int) or a percentage (\"10%\")",
            ));
        }
        let n: i64 = obj.extract()?;
        let n = usize::try_from(n).map_err(|_| {
            Error::InvalidArgument(format!(
                "max_failures={n}: give a number of devices, 0 or more"
            ))
        })?;
        Ok(Threshold(Size::Count(n)))
    }
}

/// `resume=`: `False` a new rollout, `True` the newest unfinished one, a
/// `str` the one with that id.
impl<'a, 'py> FromPyObject<'a, 'py> for Resume {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBool>() {
            return Ok(if b.is_true() {
                Resume::Latest
            } else {
                Resume::New
            });
        }
        let id = obj.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(
                "resume is None, True (the newest unfinished rollout) or a rollout id",
            )
        })?;
        Ok(Resume::Id(id.to_cow()?.into_owned()))
    }
}
