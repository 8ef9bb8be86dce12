//! `Manifest`: build, sign, verify, compare and serialize release manifests.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict};

use super::convert::repr;
use crate::auth::SigningKey;
use crate::bundle::Bundle;
use crate::config::Project;
use crate::manifest::{FileEntry, Manifest};
use crate::protocol::PushMode;

/// A release manifest: a version and its files with sizes and SHA-256.
#[pyclass(name = "Manifest", module = "uota", frozen)]
pub(crate) struct PyManifest {
    inner: Mutex<Manifest>,
}

impl PyManifest {
    fn new(m: Manifest) -> Self {
        Self {
            inner: Mutex::new(m),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Manifest> {
        // A panic cannot leave a Manifest half-updated: every write is one assignment.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the manifest as it is now.
    pub(crate) fn snapshot(&self) -> Manifest {
        self.lock().clone()
    }
}

fn entry_tuple(e: &FileEntry) -> (String, u64, String) {
    (e.path.clone(), e.size, e.sha256_hex())
}

#[pymethods]
impl PyManifest {
    /// Build a manifest from the files under `root` matching `include` and not `exclude`.
    #[staticmethod]
    #[pyo3(
        signature = (root, include = vec!["**".to_string()], exclude = vec![], version = "0.0.0".to_string()),
        text_signature = "(root, include=['**'], exclude=[], version='0.0.0')"
    )]
    fn build(
        py: Python<'_>,
        root: PathBuf,
        include: Vec<String>,
        exclude: Vec<String>,
        version: String,
    ) -> PyResult<Self> {
        let m = py.detach(|| Manifest::build(&root, &include, &exclude, &version))?;
        Ok(Self::new(m))
    }

    /// The manifest a push of the project in `root` sends in `mode` ("full" or "fast").
    #[staticmethod]
    #[pyo3(signature = (root, mode = "full"))]
    fn for_project(py: Python<'_>, root: PathBuf, mode: &str) -> PyResult<Self> {
        let mode: PushMode = mode.parse()?;
        let m = py.detach(|| {
            let project = Project::load(&root)?;
            Bundle::for_project(&project, mode).map(Bundle::into_manifest)
        })?;
        Ok(Self::new(m))
    }

    /// Parse micro-ota's push-manifest JSON.
    #[staticmethod]
    fn from_json(json: &str) -> PyResult<Self> {
        Ok(Self::new(Manifest::from_json(json)?))
    }

    /// The release version.
    #[getter]
    fn version(&self) -> String {
        self.lock().version.clone()
    }

    /// The files as `(path, size, sha256_hex)` tuples, in manifest order.
    #[getter]
    fn files(&self) -> Vec<(String, u64, String)> {
        self.lock().files.iter().map(entry_tuple).collect()
    }

    /// The hex signature, or `None` when unsigned.
    #[getter]
    fn sig(&self) -> Option<String> {
        self.lock().sig.clone()
    }

    /// Sum of the file sizes.
    #[getter]
    fn total_size(&self) -> u64 {
        self.lock().total_size()
    }

    /// Sign the manifest with `key` (HMAC-SHA256 of the signing payload).
    fn sign(&self, key: &str) {
        self.lock().sign(&SigningKey::new(key));
    }

    /// Check the signature against `key`; raises `SignatureMismatch`.
    fn verify(&self, key: &str) -> PyResult<()> {
        Ok(self.lock().verify(&SigningKey::new(key))?)
    }

    /// micro-ota's signing payload: the bytes the signature covers.
    fn signing_payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.lock().signing_payload())
    }

    /// The `<sha256> <size> <path>` lines of `/ota_manifest.txt`.
    fn manifest_lines<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.lock().manifest_lines())
    }

    /// micro-ota's push-manifest JSON.
    fn to_json(&self) -> String {
        self.lock().to_json()
    }

    /// How `newer` differs from this (older) manifest.
    fn diff<'py>(
        &self,
        py: Python<'py>,
        newer: &Bound<'py, PyManifest>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let newer = newer.get().snapshot();
        let d = self.lock().diff(&newer);
        let out = PyDict::new(py);
        let entries = |v: &[FileEntry]| v.iter().map(entry_tuple).collect::<Vec<_>>();
        out.set_item("added", entries(&d.added))?;
        out.set_item("changed", entries(&d.changed))?;
        out.set_item("removed", &d.removed)?;
        out.set_item("unchanged", &d.unchanged)?;
        out.set_item("bytes_to_send", d.bytes_to_send())?;
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.lock().files.len()
    }

    fn __eq__<'py>(&self, other: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
        let py = other.py();
        match other.cast::<PyManifest>() {
            Ok(o) => {
                // Copy first: `other` may be `self`, whose lock is taken next.
                let theirs = o.get().snapshot();
                PyBool::new(py, *self.lock() == theirs)
                    .to_owned()
                    .into_any()
            }
            Err(_) => py.NotImplemented().into_bound(py),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let m = self.lock();
        format!(
            "Manifest(version={}, files={}, bytes={}, signed={})",
            repr(py, &m.version),
            m.files.len(),
            m.total_size(),
            if m.sig.is_some() { "True" } else { "False" }
        )
    }
}
