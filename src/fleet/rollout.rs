//! Rolling a release out to many devices: waves, concurrency, failure
//! thresholds, health gates, retries, a resumable state file, and a report.
//!
//! The release is built once (one [`Bundle`]: manifest, hashes, `.mpy`
//! files); every device still gets a session of its own, signed for it
//! (per-device keys from a fleet key) and bound to its nonce.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bundle::Bundle;
use crate::device::{ConnectOptions, Device, PushOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::link::Link;

use super::inventory::FleetDevice;
use super::report::{
    Counts, DeviceError, DeviceResult, DeviceStatus, GroupSummary, Outcome, RolloutReport,
};
use super::select::{Groups, Threshold};
use super::state::{self, RolloutState};

/// How a rollout runs.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// The waves (default: one wave of every device).
    pub groups: Groups,
    /// Devices pushed at once within a wave (default 16).
    pub concurrency: usize,
    /// Failures tolerated per wave and over the whole rollout; crossing it
    /// starts no further device (`None`: never stop).
    pub max_failures: Option<Threshold>,
    /// After a device commits, wait up to this long for it to confirm the
    /// release; a rollback, a crash loop or the time running out is that
    /// device's failure (`None`: the commit is enough).
    pub health_wait: Option<Duration>,
    /// Attempts after the first, for link failures only (a device that
    /// cannot be reached or drops the link); a refused release or a wrong
    /// key is never retried.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub retry_backoff: Duration,
    /// The time allowed for one device, retries and health wait included.
    pub device_timeout: Duration,
    /// The pause between waves.
    pub pause_between: Duration,
    /// How to connect to each device (password, keys, timeouts).
    pub connect: ConnectOptions,
    /// How to push to each device.
    pub push: PushOptions,
    /// Where the rollout's state is written after each device
    /// (`.uota/rollouts` of the project); `None` writes none.
    pub state_dir: Option<PathBuf>,
}

impl RolloutOptions {
    /// The options a project gives: its secrets and protocol
    /// ([`ConnectOptions::for_project`]), its push settings
    /// ([`PushOptions::for_project`]), and its rollouts' state folder
    /// (`.uota/rollouts`); the other settings at their defaults.
    ///
    /// # Errors
    ///
    /// Those of [`ConnectOptions::for_project`].
    pub fn for_project(project: &crate::config::Project, mode: crate::PushMode) -> Result<Self> {
        Ok(RolloutOptions {
            connect: ConnectOptions::for_project(project)?,
            push: PushOptions::for_project(project, mode),
            state_dir: Some(project.root.join(state::ROLLOUTS_DIR)),
            ..RolloutOptions::default()
        })
    }
}

impl Default for RolloutOptions {
    fn default() -> Self {
        Self {
            groups: Groups::default(),
            concurrency: 16,
            max_failures: None,
            health_wait: None,
            retries: 2,
            retry_backoff: Duration::from_secs(1),
            device_timeout: Duration::from_secs(300),
            pause_between: Duration::ZERO,
            connect: ConnectOptions::default(),
            push: PushOptions::default(),
            state_dir: None,
        }
    }
}

/// What a rollout reports while it runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FleetEvent {
    /// A wave starts with this many devices to do.
    GroupStarted {
        /// The wave, from 1.
        group: usize,
        /// Devices it will start (those a resumed rollout finished excluded).
        devices: usize,
    },
    /// Work on a device starts (again, for a retry).
    DeviceStarted {
        /// Its inventory name.
        name: String,
        /// Its wave.
        group: usize,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A device's link failed; it is tried again after `after`.
    DeviceRetrying {
        /// Its inventory name.
        name: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// The wait before the next attempt.
        after: Duration,
    },
    /// A device committed; the rollout waits for it to confirm the release.
    HealthWaiting {
        /// Its inventory name.
        name: String,
    },
    /// A device is done with.
    DeviceFinished(DeviceResult),
    /// A wave is done with.
    GroupFinished(GroupSummary),
    /// No further device will be started.
    Stopping {
        /// Why.
        reason: String,
    },
}

/// Stops a running rollout from elsewhere (a Ctrl-C handler, another task).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<u8>>);

const RUN: u8 = 0;
const STOP: u8 = 1;
const ABORT: u8 = 2;

impl StopHandle {
    /// Start no further device; those in flight finish.
    pub fn stop(&self) {
        self.0.send_if_modified(|s| {
            let was = *s;
            *s = (*s).max(STOP);
            was != *s
        });
    }

    /// Also cut the devices in flight off (their connections are reset: a
    /// device keeps its previous release, and what it staged is resumable).
    pub fn abort(&self) {
        self.0.send_replace(ABORT);
    }
}

/// A rollout of one release to a list of devices.
pub struct Rollout {
    id: String,
    devices: Vec<FleetDevice>,
    bundle: Arc<Bundle>,
    opts: RolloutOptions,
    created: u64,
    done: Vec<DeviceResult>,
    stop: Arc<watch::Sender<u8>>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("id", &self.id)
            .field("devices", &self.devices.len())
            .field("version", &self.bundle.manifest().version)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Rollout {
    /// A new rollout of `bundle` to `devices` (in order: canaries first).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for no devices, a concurrency of 0, or two
    /// devices with one name.
    pub fn new(devices: Vec<FleetDevice>, bundle: Bundle, opts: RolloutOptions) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::InvalidArgument(
                "a rollout needs at least one device".into(),
            ));
        }
        if opts.concurrency == 0 {
            return Err(Error::InvalidArgument(
                "--concurrency must be at least 1".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        if let Some(d) = devices.iter().find(|d| !names.insert(d.name.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "two devices of the rollout are named {:?}",
                d.name
            )));
        }
        Ok(Rollout {
            id: state::new_id(),
            devices,
            bundle: Arc::new(bundle),
            opts,
            created: now_secs(),
            done: Vec::new(),
            stop: Arc::new(watch::channel(RUN).0),
        })
    }

    /// Continue the rollout whose state is at `state_file`: devices it
    /// finished (any status but not reached) keep their result and are not
    /// touched; the others are pushed. Thresholds count this run's failures.
    ///
    /// # Errors
    ///
    /// Those of [`Rollout::new`] and [`RolloutState::load`], and
    /// [`Error::InvalidArgument`] when `bundle` is not the release the
    /// rollout started with (the project changed since).
    pub fn resume(
        state_file: &Path,
        devices: Vec<FleetDevice>,
        bundle: Bundle,
        opts: RolloutOptions,
    ) -> Result<Self> {
        let st = RolloutState::load(state_file)?;
        if st.digest != state::release_digest(&bundle) {
            return Err(Error::InvalidArgument(format!(
                "rollout {} released version {:?}, and the project now builds another release (its files or version changed): start a new rollout instead of resuming",
                st.id, st.version
            )));
        }
        let mut r = Rollout::new(devices, bundle, opts)?;
        r.id = st.id;
        r.created = st.created;
        r.done = st
            .devices
            .into_iter()
            .filter(|d| d.status.is_final())
            .collect();
        Ok(r)
    }

    /// The rollout's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where its state is written, when it is.
    pub fn state_file(&self) -> Option<PathBuf> {
        self.opts
            .state_dir
            .as_ref()
            .map(|d| RolloutState::path(d, &self.id))
    }

    /// A handle that stops the rollout once it runs.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Run the rollout to its end (or until a threshold or a stop), calling
    /// `on_event` as it goes; the report says what happened to each device.
    ///
    /// # Errors
    ///
    /// Only for what stops the rollout as a whole before it starts; a
    /// device's failure is in the report.
    pub async fn run(
        self,
        on_event: &mut (dyn FnMut(&FleetEvent) + Send),
    ) -> Result<RolloutReport> {
        let started = Instant::now();
        let version = self.bundle.manifest().version.clone();
        let mode = format!("{:?}", self.opts.push.mode).to_lowercase();
        let mut state = RolloutState {
            id: self.id.clone(),
            mode: mode.clone(),
            version: version.clone(),
            digest: state::release_digest(&self.bundle),
            created: self.created,
            finished: false,
            devices: self.done.clone(),
        };
        let save = |state: &RolloutState| {
            if let Some(dir) = &self.opts.state_dir {
                if let Err(e) = state.save(dir) {
                    tracing::warn!(error = %e, "could not write the rollout's state");
                }
            }
        };
        save(&state);

        let n = self.devices.len();
        let mut results: Vec<Option<DeviceResult>> = self
            .devices
            .iter()
            .map(|d| self.done.iter().find(|r| r.name == d.name).cloned())
            .collect();
        let claimed: HashMap<String, String> = self
            .done
            .iter()
            .filter(|r| r.status != DeviceStatus::Skipped)
            .filter_map(|r| Some((r.id.clone()?, r.name.clone())))
            .collect();
        let ctx = Arc::new(Job {
            bundle: self.bundle.clone(),
            opts: self.opts.clone(),
            version: version.clone(),
            claimed: Mutex::new(claimed),
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<FleetEvent>();
        let mut stop_rx = self.stop.subscribe();
        let mut stopped: Option<String> = None;
        let mut cancelled = false;
        let mut failed_overall = 0usize;
        let waves = self.opts.groups.split(n);
        let mut summaries = Vec::new();

        for (gi, range) in waves.iter().enumerate() {
            let group = gi + 1;
            let mut queue: VecDeque<usize> =
                range.clone().filter(|i| results[*i].is_none()).collect();
            let wave_start = Instant::now();
            if stopped.is_none()
                && !cancelled
                && !queue.is_empty()
                && gi > 0
                && !self.opts.pause_between.is_zero()
            {
                tokio::select! {
                    _ = tokio::time::sleep(self.opts.pause_between) => {}
                    _ = stop_rx.wait_for(|s| *s != RUN) => {}
                }
            }
            notice_stop(&stop_rx, &mut cancelled, on_event);
            if stopped.is_none() && !cancelled && !queue.is_empty() {
                on_event(&FleetEvent::GroupStarted {
                    group,
                    devices: queue.len(),
                });
                let mut failed_here = 0usize;
                let mut tasks = tokio::task::JoinSet::new();
                let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
                loop {
                    // A stop asked for since the last look (by `on_event`,
                    // say) starts no further device.
                    notice_stop(&stop_rx, &mut cancelled, on_event);
                    while stopped.is_none() && !cancelled && tasks.len() < self.opts.concurrency {
                        let Some(i) = queue.pop_front() else { break };
                        let (ctx, dev, tx) = (ctx.clone(), self.devices[i].clone(), tx.clone());
                        let handle = tasks.spawn(async move { ctx.device(dev, group, &tx).await });
                        running.insert(handle.id(), i);
                    }
                    if tasks.is_empty() {
                        break;
                    }
                    tokio::select! {
                        Some(ev) = rx.recv() => on_event(&ev),
                        Some(joined) = tasks.join_next_with_id() => {
                            let (i, result) = match joined {
                                Ok((id, r)) => (running.remove(&id), r),
                                Err(e) => {
                                    let i = running.remove(&e.id());
                                    let dev = &self.devices[i.unwrap_or(0)];
                                    (i, aborted(dev, group, &version))
                                }
                            };
                            let Some(i) = i else { continue };
                            while let Ok(ev) = rx.try_recv() {
                                on_event(&ev);
                            }
                            if result.status.is_failure() {
                                failed_here += 1;
                                failed_overall += 1;
                            }
                            state.devices.retain(|r| r.name != result.name);
                            state.devices.push(result.clone());
                            save(&state);
                            on_event(&FleetEvent::DeviceFinished(result.clone()));
                            results[i] = Some(result);
                            if stopped.is_none() {
                                if let Some(t) = self.opts.max_failures {
                                    let reason = if t.crossed(failed_here, range.len()) {
                                        Some(format!("{failed_here} of the {} devices of group {group} failed, more than --max-failures {t}", range.len()))
                                    } else if t.crossed(failed_overall, n) {
                                        Some(format!("{failed_overall} of the {n} devices failed, more than --max-failures {t}"))
                                    } else {
                                        None
                                    };
                                    if let Some(reason) = reason {
                                        on_event(&FleetEvent::Stopping { reason: reason.clone() });
                                        stopped = Some(reason);
                                    }
                                }
                            }
                        }
                        Ok(()) = stop_rx.changed() => {
                            let s = *stop_rx.borrow_and_update();
                            notice_stop(&stop_rx, &mut cancelled, on_event);
                            if s == ABORT {
                                tasks.abort_all();
                            }
                        }
                    }
                }
            }
            let why = match (&stopped, cancelled) {
                (Some(reason), _) => format!("the rollout stopped: {reason}"),
                (None, true) => "the rollout was cancelled".to_string(),
                (None, false) => String::new(),
            };
            for i in range.clone() {
                if results[i].is_none() {
                    results[i] = Some(not_reached(&self.devices[i], group, &version, &why));
                }
            }
            let members: Vec<&DeviceResult> = results[range.clone()].iter().flatten().collect();
            let summary = GroupSummary {
                group,
                devices: range.len(),
                counts: Counts::of(members.iter().copied()),
                seconds: wave_start.elapsed().as_secs_f64(),
            };
            on_event(&FleetEvent::GroupFinished(summary.clone()));
            summaries.push(summary);
        }
        let devices: Vec<DeviceResult> = results.into_iter().flatten().collect();
        let summary = Counts::of(&devices);
        state.finished = devices.iter().all(|d| d.status.is_final());
        save(&state);
        let outcome = if cancelled {
            Outcome::Cancelled
        } else if stopped.is_some() {
            Outcome::Stopped
        } else if summary.failures() > 0 {
            Outcome::DevicesFailed
        } else {
            Outcome::Success
        };
        Ok(RolloutReport {
            id: self.id.clone(),
            mode,
            version,
            outcome,
            stopped: stopped.or_else(|| cancelled.then(|| "cancelled".to_string())),
            devices,
            groups: summaries,
            summary,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Act on a stop asked for through the [`StopHandle`] (at any time: before
/// the run, between waves, from `on_event`): set `cancelled` and say so,
/// once.
fn notice_stop(
    stop_rx: &watch::Receiver<u8>,
    cancelled: &mut bool,
    on_event: &mut (dyn FnMut(&FleetEvent) + Send),
) {
    let asked = *stop_rx.borrow() >= STOP;
    if asked && !*cancelled {
        *cancelled = true;
        on_event(&FleetEvent::Stopping {
            reason: "cancelled: no further device is started; those in flight finish".into(),
        });
    }
}

fn blank(dev: &FleetDevice, group: usize, version: &str, status: DeviceStatus) -> DeviceResult {
    DeviceResult {
        name: dev.name.clone(),
        id: None,
        address: dev.address(),
        group,
        from: None,
        to: version.to_string(),
        status,
        error: None,
        attempts: 0,
        seconds: 0.0,
        bytes: 0,
    }
}

fn not_reached(dev: &FleetDevice, group: usize, version: &str, why: &str) -> DeviceResult {
    let mut r = blank(dev, group, version, DeviceStatus::NotReached);
    r.error = Some(DeviceError {
        kind: "NotReached".into(),
        message: why.to_string(),
    });
    r
}

fn aborted(dev: &FleetDevice, group: usize, version: &str) -> DeviceResult {
    let mut r = blank(dev, group, version, DeviceStatus::Failed);
    r.attempts = 1;
    r.error = Some(DeviceError {
        kind: format!("{:?}", ErrorKind::Cancelled),
        message: "aborted in flight: the connection was reset, so the device keeps the release it had (what it staged is resumed by the next push)".into(),
    });
    r
}

/// Why one attempt on a device did not update it.
enum Failure {
    /// An error (retried when it is a link failure and retries are left).
    Error(Error),
    /// An error never retried (the device's time ran out, or its health wait did).
    Final(Error),
    /// The device rolled back during the health wait.
    RolledBack(String),
    /// Another entry of the rollout reached this device.
    Skipped(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// What every device's work shares.
struct Job {
    bundle: Arc<Bundle>,
    opts: RolloutOptions,
    version: String,
    /// Device ids reached so far, with the entry that reached each.
    claimed: Mutex<HashMap<String, String>>,
}

/// What one device's attempts learned.
#[derive(Default)]
struct Seen {
    id: Option<String>,
    from: Option<String>,
    bytes: u64,
}

impl Job {
    async fn device(
        &self,
        dev: FleetDevice,
        group: usize,
        tx: &mpsc::UnboundedSender<FleetEvent>,
    ) -> DeviceResult {
        let start = Instant::now();
        let mut seen = Seen::default();
        let mut attempt = 0u32;
        let deadline = start + self.opts.device_timeout;
        let outcome = loop {
            attempt += 1;
            let _ = tx.send(FleetEvent::DeviceStarted {
                name: dev.name.clone(),
                group,
                attempt,
            });
            let tried = tokio::time::timeout_at(deadline, self.attempt(&dev, &mut seen, tx))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Final(Error::Timeout {
                        what: format!("the rollout's work on {}", dev.name),
                        after: self.opts.device_timeout,
                    }))
                });
            match tried {
                Err(Failure::Error(e))
                    if attempt <= self.opts.retries
                        && matches!(e.kind(), ErrorKind::Transport | ErrorKind::Timeout) =>
                {
                    let after = self
                        .opts
                        .retry_backoff
                        .saturating_mul(1 << (attempt - 1).min(5))
                        .min(Duration::from_secs(60));
                    let _ = tx.send(FleetEvent::DeviceRetrying {
                        name: dev.name.clone(),
                        attempt,
                        error: e.to_string(),
                        after,
                    });
                    if Instant::now() + after >= deadline {
                        break Err(Failure::Error(e));
                    }
                    tokio::time::sleep(after).await;
                }
                other => break other,
            }
        };
        let mut r = blank(&dev, group, &self.version, DeviceStatus::Updated);
        r.id = seen.id;
        r.from = seen.from;
        r.attempts = attempt;
        r.bytes = seen.bytes;
        let error = |kind: String, message: String| Some(DeviceError { kind, message });
        match outcome {
            Ok(status) => r.status = status,
            // The push waited for the restart and found the device back on
            // its previous release: its boot guard rolled the new one back.
            Err(Failure::Error(Error::ReleaseRefused { reason, message }))
                if reason == "rolled_back" =>
            {
                r.status = DeviceStatus::RolledBack;
                r.error = error("RolledBack".into(), message);
            }
            Err(Failure::Error(e) | Failure::Final(e)) => {
                r.status = DeviceStatus::Failed;
                r.error = error(format!("{:?}", e.kind()), e.to_string());
            }
            Err(Failure::RolledBack(why)) => {
                r.status = DeviceStatus::RolledBack;
                r.error = error("RolledBack".into(), why);
            }
            Err(Failure::Skipped(why)) => {
                r.status = DeviceStatus::Skipped;
                r.error = error("Skipped".into(), why);
            }
        }
        r.seconds = start.elapsed().as_secs_f64();
        r
    }

    async fn attempt(
        &self,
        entry: &FleetDevice,
        seen: &mut Seen,
        tx: &mpsc::UnboundedSender<FleetEvent>,
    ) -> std::result::Result<DeviceStatus, Failure> {
        let link = entry.link();
        let mut dev = Device::open(&link, self.opts.connect.clone()).await?;
        let id = dev.device_id().to_string();
        if let Some(expected) = &entry.id {
            if &id != expected {
                return Err(Failure::Final(Error::WrongDevice {
                    name: entry.name.clone(),
                    target: link.to_string(),
                    expected: expected.clone(),
                    found: id,
                }));
            }
        }
        if !id.is_empty() {
            seen.id = Some(id.clone());
            let mut claimed = self.claimed.lock().expect("claims lock");
            match claimed.get(&id) {
                Some(other) if other != &entry.name => {
                    return Err(Failure::Skipped(format!(
                        "{link} is device {id}, which this rollout reaches as {other:?}"
                    )))
                }
                _ => {
                    claimed.insert(id.clone(), entry.name.clone());
                }
            }
        }
        if seen.from.is_none() {
            let from = match dev.hello().map(|h| h.version.clone()) {
                Some(v) if !v.is_empty() => v,
                _ => dev.version().await?,
            };
            seen.from = Some(from);
        }
        let pushed = dev
            .push_bundle(&self.bundle, &self.opts.push, &mut |_| {})
            .await;
        // A push that waited for the restart counted its bytes before the
        // reconnection replaced the connection.
        seen.bytes += match &pushed {
            Ok(r) => r.wire_bytes + r.received_bytes,
            Err(_) => dev.bytes_sent() + dev.bytes_received(),
        };
        let report = pushed?;
        let _ = dev.close().await;
        if let Some(wait) = self.opts.health_wait {
            let _ = tx.send(FleetEvent::HealthWaiting {
                name: entry.name.clone(),
            });
            self.wait_confirmed(&link, wait).await?;
        }
        Ok(
            if report.up_to_date && seen.from.as_deref() == Some(self.version.as_str()) {
                DeviceStatus::Unchanged
            } else {
                DeviceStatus::Updated
            },
        )
    }

    /// Poll the device until it has confirmed the release; a device that
    /// runs another version has rolled back.
    async fn wait_confirmed(
        &self,
        link: &Link,
        wait: Duration,
    ) -> std::result::Result<(), Failure> {
        let deadline = Instant::now() + wait;
        let opts = ConnectOptions {
            connect_retry: Duration::ZERO,
            connect_timeout: Duration::from_secs(2),
            timeout: self.opts.connect.timeout.min(Duration::from_secs(5)),
            ..self.opts.connect.clone()
        };
        let mut last = "no answer yet".to_string();
        loop {
            let asked = tokio::time::timeout_at(deadline, async {
                let mut dev = Device::open(link, opts.clone()).await?;
                let info = dev.info().await;
                let _ = dev.close().await;
                info
            })
            .await;
            match asked {
                Ok(Ok(info)) => {
                    let release = info.release();
                    if release.active != self.version {
                        let why = release.rollback_reason().unwrap_or("no reason recorded");
                        return Err(Failure::RolledBack(format!(
                            "the device rolled back to {:?} ({why})",
                            release.active
                        )));
                    }
                    if release.state == "confirmed" {
                        return Ok(());
                    }
                    let (state, attempts) = (&release.state, release.attempts);
                    last = format!("{state}, {attempts} boots of it so far");
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(Failure::Final(Error::Timeout {
                    what: format!("the release's confirmation (last seen: {last})"),
                    after: wait,
                }));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rollout of a one-file release to `n` addresses where nothing
    /// listens (each device fails at once), in waves of one.
    fn unreachable_rollout(n: usize, dir: &Path) -> Rollout {
        std::fs::write(dir.join("main.py"), "print(1)\n").unwrap();
        let manifest = crate::manifest::Manifest::build(dir, &["**".into()], &[], "1.0.0").unwrap();
        let devices = (1..=n)
            .map(|i| FleetDevice::tcp(format!("d{i}"), "127.0.0.1", 1))
            .collect();
        let opts = RolloutOptions {
            groups: "1,2,100%".parse().unwrap(),
            retries: 0,
            connect: ConnectOptions {
                connect_retry: Duration::ZERO,
                connect_timeout: Duration::from_secs(2),
                ..ConnectOptions::default()
            },
            ..RolloutOptions::default()
        };
        Rollout::new(devices, Bundle::from_dir(dir, manifest), opts).unwrap()
    }

    fn names_started(events: &[FleetEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                FleetEvent::DeviceStarted { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_stop_asked_for_from_on_event_or_before_the_run_starts_no_further_device() {
        let dir = tempfile::tempdir().unwrap();
        // Stopped from the event callback at the end of the first wave: the
        // next wave does not start.
        let rollout = unreachable_rollout(3, dir.path());
        let stop = rollout.stop_handle();
        let mut events = Vec::new();
        let report = rollout
            .run(&mut |ev| {
                if matches!(ev, FleetEvent::GroupFinished(_)) {
                    stop.stop();
                }
                events.push(ev.clone());
            })
            .await
            .unwrap();
        assert_eq!(names_started(&events), ["d1"]);
        assert_eq!(report.outcome, Outcome::Cancelled);
        let statuses: Vec<_> = report.devices.iter().map(|d| d.status).collect();
        assert_eq!(
            statuses,
            [
                DeviceStatus::Failed,
                DeviceStatus::NotReached,
                DeviceStatus::NotReached
            ]
        );
        let stopping = events
            .iter()
            .filter(|e| matches!(e, FleetEvent::Stopping { .. }))
            .count();
        assert_eq!(stopping, 1, "said once");
        // Stopped before it runs: no device starts.
        let rollout = unreachable_rollout(2, dir.path());
        rollout.stop_handle().stop();
        let mut events = Vec::new();
        let report = rollout
            .run(&mut |ev| events.push(ev.clone()))
            .await
            .unwrap();
        assert!(names_started(&events).is_empty());
        assert_eq!(report.summary.not_reached, 2);
        assert_eq!(report.outcome, Outcome::Cancelled);
    }
}
