//! Fleets: `Fleet` (an inventory: load, select, scan, status), `rollout` and
//! `rollout_async`, and what they return (`FleetDevice`, `Discovered`,
//! `DeviceState`, `RolloutReport`).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_async_runtimes::tokio::future_into_py;
use serde_json::json;

use super::convert::{json_to_py, py_to_json, repr, to_py, Json};
use super::runtime::{self, block_on};
use crate::config::Project;
use crate::device::ConnectOptions;
use crate::error::Error;
use crate::fleet::{
    self, discover, Discovered, FleetDevice, FleetEvent, Inventory, Resume, RolloutOptions,
    RolloutPlan, RolloutReport, ScanOptions, Selection,
};
use crate::protocol::PushMode;

/// `name` seconds as a duration: a finite number, 0 or more.
fn seconds(name: &str, secs: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        Error::InvalidArgument(format!(
            "{name} must be a number of seconds, 0 or more, not {secs}"
        ))
    })
}

/// `name` seconds as a duration: a finite number above 0.
fn positive_seconds(name: &str, secs: f64) -> Result<Duration, Error> {
    match seconds(name, secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::InvalidArgument(format!(
            "{name} must be a positive number of seconds, not {secs}"
        ))),
    }
}

/// One device of the inventory.
#[pyclass(name = "FleetDevice", module = "uota", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PyFleetDevice(FleetDevice);

#[pymethods]
impl PyFleetDevice {
    /// An inventory entry; exactly one of `host` and `serial`.
    #[new]
    #[pyo3(signature = (name, *, host = None, port = None, serial = None, baud = None, tags = Vec::new(), id = None))]
    fn new(
        name: String,
        host: Option<String>,
        port: Option<u16>,
        serial: Option<String>,
        baud: Option<u32>,
        tags: Vec<String>,
        id: Option<String>,
    ) -> PyResult<Self> {
        let d = FleetDevice {
            name,
            host,
            port,
            serial,
            baud,
            tags,
            id,
        };
        d.check().map_err(Error::InvalidArgument)?;
        Ok(Self(d))
    }

    /// Its name, unique within the inventory.
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// Its network address (`None` for a serial device).
    #[getter]
    fn host(&self) -> Option<&str> {
        self.0.host.as_deref()
    }

    /// Its OTA port as the inventory gives it (`None`: 2018).
    #[getter]
    fn port(&self) -> Option<u16> {
        self.0.port
    }

    /// Its serial port (`None` for a network device).
    #[getter]
    fn serial(&self) -> Option<&str> {
        self.0.serial.as_deref()
    }

    /// Its serial baud rate as the inventory gives it (`None`: 115200).
    #[getter]
    fn baud(&self) -> Option<u32> {
        self.0.baud
    }

    /// Its tags.
    #[getter]
    fn tags(&self) -> Vec<String> {
        self.0.tags.clone()
    }

    /// The id the device must report (`None`: any).
    #[getter]
    fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }

    /// `host:port`, or the serial port.
    #[getter]
    fn address(&self) -> String {
        self.0.address()
    }

    /// The link to it, as `Device.open` takes it.
    #[getter]
    fn link(&self) -> String {
        self.0.link().to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let d = &self.0;
        let mut parts = vec![format!("name={}", repr(py, &d.name))];
        if let Some(h) = &d.host {
            parts.push(format!("host={}", repr(py, h)));
        }
        if let Some(p) = d.port {
            parts.push(format!("port={p}"));
        }
        if let Some(s) = &d.serial {
            parts.push(format!("serial={}", repr(py, s)));
        }
        if let Some(b) = d.baud {
            parts.push(format!("baud={b}"));
        }
        if !d.tags.is_empty() {
            let tags: Vec<String> = d.tags.iter().map(|t| repr(py, t)).collect();
            parts.push(format!("tags=[{}]", tags.join(", ")));
        }
        if let Some(i) = &d.id {
            parts.push(format!("id={}", repr(py, i)));
        }
        format!("FleetDevice({})", parts.join(", "))
    }
}

/// An element of `Fleet(devices=...)`: a `FleetDevice`, or a dict of an
/// inventory entry's keys (as `config/fleet.json` spells them).
struct DeviceArg(FleetDevice);

impl<'a, 'py> FromPyObject<'a, 'py> for DeviceArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(d) = obj.cast::<PyFleetDevice>() {
            return Ok(DeviceArg(d.get().0.clone()));
        }
        if obj.cast::<PyDict>().is_err() {
            return Err(PyTypeError::new_err(
                "a device is a FleetDevice or a dict with \"name\", \"host\", \"port\", \"serial\", \"baud\", \"tags\", \"id\"",
            ));
        }
        let value = py_to_json(&obj)?;
        let device = serde_json::from_value(value)
            .map_err(|e| Error::InvalidArgument(format!("not a fleet device: {e}")))?;
        Ok(DeviceArg(device))
    }
}

/// A device that answered a scan.
#[pyclass(name = "Discovered", module = "uota", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct PyDiscovered {
    /// Its address.
    #[pyo3(get)]
    host: String,
    /// Its OTA port.
    #[pyo3(get)]
    port: u16,
    /// `"uota"`, or `"micro-ota"` for a device running micro-ota's runtime.
    #[pyo3(get)]
    protocol: String,
    /// Its id (uota devices).
    #[pyo3(get)]
    id: Option<String>,
    /// The uota runtime's version.
    #[pyo3(get)]
    runtime: Option<String>,
    /// The active release's version.
    #[pyo3(get)]
    version: Option<String>,
    /// The highest release number it has accepted.
    #[pyo3(get)]
    release: Option<u64>,
    /// `"confirmed"`, or `"pending"` while the release waits for confirmation.
    #[pyo3(get)]
    state: Option<String>,
    /// Whether it requires a password or key for everything.
    #[pyo3(get)]
    auth: bool,
}

impl From<Discovered> for PyDiscovered {
    fn from(d: Discovered) -> Self {
        Self {
            host: d.host,
            port: d.port,
            protocol: d.protocol,
            id: d.id,
            runtime: d.runtime,
            version: d.version,
            release: d.release,
            state: d.state,
            auth: d.auth,
        }
    }
}

#[pymethods]
impl PyDiscovered {
    fn __repr__(&self, py: Python<'_>) -> String {
        let opt = |s: &Option<String>| s.as_deref().map_or("None".into(), |s| repr(py, s));
        format!(
            "Discovered(host={}, port={}, protocol={}, id={}, version={})",
            repr(py, &self.host),
            self.port,
            repr(py, &self.protocol),
            opt(&self.id),
            opt(&self.version)
        )
    }
}

/// What one device reported to `Fleet.status`, or why it could not be asked.
#[pyclass(name = "DeviceState", module = "uota", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct PyDeviceState {
    /// Its inventory name.
    #[pyo3(get)]
    name: String,
    /// Where it was asked.
    #[pyo3(get)]
    address: String,
    /// Whether it answered.
    #[pyo3(get)]
    reachable: bool,
    /// The id it reported.
    #[pyo3(get)]
    id: Option<String>,
    /// The active release's version.
    #[pyo3(get)]
    version: Option<String>,
    /// The highest release number it has accepted.
    #[pyo3(get)]
    release: Option<u64>,
    /// `"confirmed"`, or `"pending"` while the release waits for confirmation.
    #[pyo3(get)]
    state: Option<String>,
    last_rollback: Option<serde_json::Value>,
    boot: Option<serde_json::Value>,
    /// The uota runtime's version.
    #[pyo3(get)]
    runtime: Option<String>,
    /// Why it could not be asked, or the id it reported is not the expected one.
    #[pyo3(get)]
    error: Option<String>,
}

impl From<fleet::DeviceState> for PyDeviceState {
    fn from(s: fleet::DeviceState) -> Self {
        Self {
            name: s.name,
            address: s.address,
            reachable: s.reachable,
            id: s.id,
            version: s.version,
            release: s.release,
            state: s.state,
            last_rollback: s.last_rollback,
            boot: s.boot,
            runtime: s.runtime,
            error: s.error,
        }
    }
}

#[pymethods]
impl PyDeviceState {
    /// The last rollback (`from`, `to`, `reason`), if any.
    #[getter]
    fn last_rollback(&self) -> Option<Json> {
        self.last_rollback.clone().map(Json)
    }

    /// Boots so far and crashes in a row (`boots`, `crashes`, `clean`).
    #[getter]
    fn boot(&self) -> Option<Json> {
        self.boot.clone().map(Json)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let opt = |s: &Option<String>| s.as_deref().map_or("None".into(), |s| repr(py, s));
        format!(
            "DeviceState(name={}, reachable={}, version={}, state={}, error={})",
            repr(py, &self.name),
            if self.reachable { "True" } else { "False" },
            opt(&self.version),
            opt(&self.state),
            opt(&self.error)
        )
    }
}

async fn scan(cidr: String, opts: Result<ScanOptions, Error>) -> PyResult<Vec<PyDiscovered>> {
    let found = discover::scan(&cidr, &opts?).await?;
    Ok(found.into_iter().map(PyDiscovered::from).collect())
}

fn scan_options(
    port: u16,
    timeout: f64,
    concurrency: usize,
    force: bool,
) -> Result<ScanOptions, Error> {
    Ok(ScanOptions {
        port,
        timeout: positive_seconds("timeout", timeout)?,
        concurrency,
        force,
        loopback_only: ScanOptions::loopback_only_from_env(),
    })
}

async fn status(
    devices: Vec<FleetDevice>,
    project: Option<PathBuf>,
    concurrency: usize,
    timeout: Result<Duration, Error>,
) -> PyResult<Vec<PyDeviceState>> {
    let timeout = timeout?;
    let connect = match project {
        Some(root) => {
            runtime::blocking(move || ConnectOptions::for_project(&Project::load(&root)?)).await?
        }
        None => ConnectOptions::default(),
    };
    let states = fleet::status::gather(&devices, &connect, concurrency, timeout).await;
    Ok(states.into_iter().map(PyDeviceState::from).collect())
}

/// A fleet inventory: devices with names, addresses, tags and expected ids.
#[pyclass(name = "Fleet", module = "uota", frozen)]
pub(crate) struct PyFleet {
    inventory: Inventory,
}

#[pymethods]
impl PyFleet {
    /// An inventory of `devices` (`FleetDevice`s or dicts of their keys).
    #[new]
    #[pyo3(signature = (devices = Vec::new()))]
    fn new(devices: Vec<DeviceArg>) -> PyResult<Self> {
        let inventory = Inventory::new(devices.into_iter().map(|d| d.0).collect())?;
        Ok(Self { inventory })
    }

    /// Read an inventory file (a project's `config/fleet.json`).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inventory = py.detach(|| Inventory::load(&path))?;
        Ok(Self { inventory })
    }

    /// The devices, in inventory order.
    #[getter]
    fn devices(&self) -> Vec<PyFleetDevice> {
        self.inventory
            .devices
            .iter()
            .cloned()
            .map(PyFleetDevice)
            .collect()
    }

    /// The devices `selection` takes (`tag:T`, `id:I`, `name:GLOB` or
    /// `GLOB`, comma-separated), as a new `Fleet`.
    fn select(&self, selection: &str) -> PyResult<Self> {
        let selection: Selection = selection.parse()?;
        let devices = selection.apply(&self.inventory.devices)?;
        Ok(Self {
            inventory: Inventory { devices },
        })
    }

    /// Scan the address range `cidr` for devices (blocking).
    #[staticmethod]
    #[pyo3(signature = (cidr, *, port = 2018, timeout = 1.0, concurrency = 256, force = false))]
    fn scan(
        py: Python<'_>,
        cidr: String,
        port: u16,
        timeout: f64,
        concurrency: usize,
        force: bool,
    ) -> PyResult<Vec<PyDiscovered>> {
        let opts = scan_options(port, timeout, concurrency, force);
        block_on(py, scan(cidr, opts))
    }

    /// Async `scan`.
    #[staticmethod]
    #[pyo3(signature = (cidr, *, port = 2018, timeout = 1.0, concurrency = 256, force = false))]
    fn scan_async(
        py: Python<'_>,
        cidr: String,
        port: u16,
        timeout: f64,
        concurrency: usize,
        force: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        let opts = scan_options(port, timeout, concurrency, force);
        future_into_py(py, scan(cidr, opts))
    }

    /// Every device's release state, asked concurrently (blocking).
    #[pyo3(signature = (project = None, *, concurrency = 16, timeout = 15.0))]
    fn status(
        &self,
        py: Python<'_>,
        project: Option<PathBuf>,
        concurrency: usize,
        timeout: f64,
    ) -> PyResult<Vec<PyDeviceState>> {
        let devices = self.inventory.devices.clone();
        let timeout = positive_seconds("timeout", timeout);
        block_on(py, status(devices, project, concurrency, timeout))
    }

    /// Async `status`.
    #[pyo3(signature = (project = None, *, concurrency = 16, timeout = 15.0))]
    fn status_async<'py>(
        &self,
        py: Python<'py>,
        project: Option<PathBuf>,
        concurrency: usize,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let devices = self.inventory.devices.clone();
        let timeout = positive_seconds("timeout", timeout);
        future_into_py(py, status(devices, project, concurrency, timeout))
    }

    fn __len__(&self) -> usize {
        self.inventory.devices.len()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let names: Vec<String> = self
            .inventory
            .devices
            .iter()
            .map(|d| repr(py, &d.name))
            .collect();
        format!("Fleet([{}])", names.join(", "))
    }
}

/// What a rollout did.
#[pyclass(name = "RolloutReport", module = "uota", frozen)]
pub(crate) struct PyRolloutReport(RolloutReport);

#[pymethods]
impl PyRolloutReport {
    /// The rollout's id (its state is `.uota/rollouts/<id>.json` in the project).
    #[getter]
    fn id(&self) -> &str {
        &self.0.id
    }

    /// `"full"` or `"fast"`.
    #[getter]
    fn mode(&self) -> &str {
        &self.0.mode
    }

    /// The version rolled out.
    #[getter]
    fn version(&self) -> &str {
        &self.0.version
    }

    /// How it ended: `"success"`, `"devices_failed"`, `"stopped"` or `"cancelled"`.
    #[getter]
    fn outcome<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.outcome)
    }

    /// Why it stopped early, when it did.
    #[getter]
    fn stopped(&self) -> Option<&str> {
        self.0.stopped.as_deref()
    }

    /// Per device, in rollout order: dicts as `to_json()` has them.
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.devices)
    }

    /// Per wave: `group`, `devices`, `counts`, `seconds`.
    #[getter]
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.groups)
    }

    /// Devices per status, over every device.
    #[getter]
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.summary)
    }

    /// Wall time of this run, in seconds.
    #[getter]
    fn seconds(&self) -> f64 {
        self.0.seconds
    }

    /// Whether the outcome is `"success"`.
    #[getter]
    fn ok(&self) -> bool {
        self.0.ok()
    }

    /// The report as JSON text.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.0.to_json()).expect("JSON values serialize")
    }

    /// The report as a JUnit XML document.
    fn to_junit(&self) -> String {
        self.0.to_junit()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RolloutReport(id={}, version={}, outcome={}, devices={})",
            repr(py, &self.0.id),
            repr(py, &self.0.version),
            self.outcome(py)?.repr()?,
            self.0.devices.len()
        ))
    }
}

/// A rollout event as a dict, its `"event"` key first.
fn event_to_py<'py>(py: Python<'py>, ev: &FleetEvent) -> PyResult<Bound<'py, PyAny>> {
    let (event, fields) = match ev {
        FleetEvent::GroupStarted { group, devices } => {
            ("group_started", json!({"group": group, "devices": devices}))
        }
        FleetEvent::DeviceStarted {
            name,
            group,
            attempt,
        } => (
            "device_started",
            json!({"name": name, "group": group, "attempt": attempt}),
        ),
        FleetEvent::DeviceRetrying {
            name,
            attempt,
            error,
            after,
        } => (
            "device_retrying",
            json!({"name": name, "attempt": attempt, "error": error, "after": after.as_secs_f64()}),
        ),
        FleetEvent::HealthWaiting { name } => ("health_waiting", json!({ "name": name })),
        FleetEvent::DeviceFinished(device) => ("device_finished", json!({ "device": device })),
        FleetEvent::GroupFinished(g) => (
            "group_finished",
            json!({"group": g.group, "devices": g.devices, "counts": g.counts, "seconds": g.seconds}),
        ),
        FleetEvent::Stopping { reason } => ("stopping", json!({ "reason": reason })),
    };
    let dict = PyDict::new(py);
    dict.set_item("event", event)?;
    if let serde_json::Value::Object(map) = fields {
        for (key, value) in &map {
            dict.set_item(key, json_to_py(py, value)?)?;
        }
    }
    Ok(dict.into_any())
}

/// A `rollout` call, its arguments converted.
struct RolloutCall {
    project: PathBuf,
    mode: PushMode,
    plan: RolloutPlan,
    settings: RolloutOptions,
    on_event: Option<Py<PyAny>>,
}

impl RolloutCall {
    #[allow(clippy::too_many_arguments)]
    fn new(
        project: PathBuf,
        fleet: Option<Bound<'_, PyFleet>>,
        select: Option<&str>,
        mode: &str,
        version: Option<String>,
        groups: &str,
        concurrency: usize,
        max_failures: Option<fleet::Threshold>,
        health_wait: Option<f64>,
        retries: u32,
        retry_backoff: f64,
        device_timeout: f64,
        pause_between: f64,
        resume: Option<Resume>,
        on_event: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        if on_event.as_ref().is_some_and(|cb| !cb.is_callable()) {
            return Err(PyTypeError::new_err("on_event must be callable"));
        }
        let settings = RolloutOptions {
            groups: groups.parse()?,
            concurrency,
            max_failures,
            health_wait: health_wait.map(|s| seconds("health_wait", s)).transpose()?,
            retries,
            retry_backoff: seconds("retry_backoff", retry_backoff)?,
            device_timeout: seconds("device_timeout", device_timeout)?,
            pause_between: seconds("pause_between", pause_between)?,
            ..RolloutOptions::default()
        };
        let plan = RolloutPlan {
            devices: fleet.map(|f| f.get().inventory.devices.clone()),
            select: select.map(str::parse).transpose()?,
            version,
            strict: false,
            resume: resume.unwrap_or_default(),
        };
        Ok(Self {
            project,
            mode: mode.parse()?,
            plan,
            settings,
            on_event: on_event.map(Bound::unbind),
        })
    }

    /// Prepare the rollout (off the async workers: it reads the project and
    /// builds the release), run it, and call `on_event` with each event.
    async fn run(self) -> PyResult<PyRolloutReport> {
        let RolloutCall {
            project,
            mode,
            plan,
            settings: s,
            on_event,
        } = self;
        let rollout = runtime::blocking(move || {
            let project = Project::load(&project)?;
            let opts = RolloutOptions {
                groups: s.groups,
                concurrency: s.concurrency,
                max_failures: s.max_failures,
                health_wait: s.health_wait,
                retries: s.retries,
                retry_backoff: s.retry_backoff,
                device_timeout: s.device_timeout,
                pause_between: s.pause_between,
                ..RolloutOptions::for_project(&project, mode)?
            };
            plan.prepare(&project, opts)
        })
        .await?;
        let stop = rollout.stop_handle();
        let mut raised: Option<PyErr> = None;
        let mut on_event = |ev: &FleetEvent| {
            let (Some(cb), None) = (&on_event, &raised) else {
                return;
            };
            let res = Python::attach(|py| cb.call1(py, (event_to_py(py, ev)?,)).map(drop));
            if let Err(e) = res {
                // No further device is started; those in flight finish.
                stop.stop();
                raised = Some(e);
            }
        };
        let report = rollout.run(&mut on_event).await?;
        match raised {
            Some(e) => Err(e),
            None => Ok(PyRolloutReport(report)),
        }
    }
}

/// Roll the project's release out to a fleet (blocking); see the stubs.
#[pyfunction]
#[pyo3(signature = (project, *, fleet = None, select = None, mode = "full", version = None, groups = "100%", concurrency = 16, max_failures = None, health_wait = None, retries = 2, retry_backoff = 1.0, device_timeout = 300.0, pause_between = 0.0, resume = None, on_event = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rollout(
    py: Python<'_>,
    project: PathBuf,
    fleet: Option<Bound<'_, PyFleet>>,
    select: Option<&str>,
    mode: &str,
    version: Option<String>,
    groups: &str,
    concurrency: usize,
    max_failures: Option<fleet::Threshold>,
    health_wait: Option<f64>,
    retries: u32,
    retry_backoff: f64,
    device_timeout: f64,
    pause_between: f64,
    resume: Option<Resume>,
    on_event: Option<Bound<'_, PyAny>>,
) -> PyResult<PyRolloutReport> {
    let call = RolloutCall::new(
        project,
        fleet,
        select,
        mode,
        version,
        groups,
        concurrency,
        max_failures,
        health_wait,
        retries,
        retry_backoff,
        device_timeout,
        pause_between,
        resume,
        on_event,
    )?;
    block_on(py, call.run())
}

/// Async `rollout`; the awaitable resolves to the `RolloutReport`.
#[pyfunction]
#[pyo3(signature = (project, *, fleet = None, select = None, mode = "full", version = None, groups = "100%", concurrency = 16, max_failures = None, health_wait = None, retries = 2, retry_backoff = 1.0, device_timeout = 300.0, pause_between = 0.0, resume = None, on_event = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rollout_async<'py>(
    py: Python<'py>,
    project: PathBuf,
    fleet: Option<Bound<'py, PyFleet>>,
    select: Option<&str>,
    mode: &str,
    version: Option<String>,
    groups: &str,
    concurrency: usize,
    max_failures: Option<fleet::Threshold>,
    health_wait: Option<f64>,
    retries: u32,
    retry_backoff: f64,
    device_timeout: f64,
    pause_between: f64,
    resume: Option<Resume>,
    on_event: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let call = RolloutCall::new(
        project,
        fleet,
        select,
        mode,
        version,
        groups,
        concurrency,
        max_failures,
        health_wait,
        retries,
        retry_backoff,
        device_timeout,
        pause_between,
        resume,
        on_event,
    )?;
    future_into_py(py, call.run())
}
