//! Pushing a release: uota's streamed, signed push, and micro-ota's sessions.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use super::{micro_ota, uota, Device, Peer};
use crate::auth::{FleetKey, SigningKey};
use crate::bundle::{Bundle, DeflateCache, FileSource};
use crate::compat::Compat;
use crate::config::Project;
use crate::error::{DeviceErrorCode, Error, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::protocol::push_plan::{Input, PlanSettings, PushPlan, Step, Summary};
use crate::protocol::{FrameType, PushMode, Request};
use crate::release::ReleaseClaims;

/// How to send a release to a device running micro-ota's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MicroOtaMethod {
    /// micro-ota's `stream_ota` binary container (what its own CLI uses).
    #[default]
    Stream,
    /// micro-ota's older `start_ota` session, one `file` command per file.
    Session,
}

/// Options of a push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Full release or fast (partial) update.
    pub mode: PushMode,
    /// Reset into the new release after the commit.
    pub reset: bool,
    /// Allow the release to replace the device runtime (`boot.py`, `lib/uota/`).
    pub runtime: bool,
    /// Key to sign the release with; it must match the device's `signingKey`.
    pub signing_key: Option<SigningKey>,
    /// Fleet key: sign with the device's own key, derived from this one and
    /// the device id (used when `signing_key` is `None`).
    pub fleet_key: Option<FleetKey>,
    /// Release number; `None` takes one above the highest the device has accepted.
    pub release: Option<u64>,
    /// Sign the release as a deliberate rollback, so that a device accepts
    /// a release number below the highest it has accepted.
    pub rollback: bool,
    /// Which devices the release fits (checked by the device).
    pub compat: Compat,
    /// Push method for micro-ota devices.
    pub micro_ota_method: MicroOtaMethod,
    /// Send only files that differ from the device's active release.
    pub delta: bool,
    /// Deflate file payloads when the device supports it.
    pub compress: bool,
    /// After a commit with `reset`, wait up to this long for the device to
    /// answer again on the new release (over TCP), so that the push returns
    /// with the device ready for the next command; `None` returns as soon
    /// as the commit is acknowledged.
    pub wait: Option<Duration>,
    /// A folder where the push keeps each device's manifest as last known
    /// (`<device id>.txt`): a delta then reads the device's manifest only
    /// when its summary digest differs from the kept one. A stale or
    /// altered file only costs that read.
    pub manifest_cache: Option<std::path::PathBuf>,
}

/// `bundle` with the `config/ota.json` a micro-ota device must receive
/// ([`crate::protocol::micro_ota::device_config`]): the key this push signs
/// with and the SHA-256 of the password this connection logged in with.
/// `None` when the bundle has no config or there is neither.
fn micro_ota_bundle(
    bundle: &Bundle,
    password: Option<&crate::auth::Password>,
    opts: &PushOptions,
) -> Result<Option<Bundle>> {
    use crate::protocol::micro_ota::{device_config, DEVICE_CONFIG};
    if bundle.manifest().get(DEVICE_CONFIG).is_none() {
        return Ok(None);
    }
    let original = bundle.source(DEVICE_CONFIG)?.read()?;
    let Some(bytes) = device_config(&original, password, opts.signing_key.as_ref())? else {
        return Ok(None);
    };
    let mut out = bundle.clone();
    out.add(DEVICE_CONFIG, FileSource::Bytes(bytes))?;
    Ok(Some(out))
}

/// How long a push waits by default for the device to come back after its
/// reset (a board's boot and WiFi connection included).
pub const DEFAULT_RESTART_WAIT: Duration = Duration::from_secs(60);

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            mode: PushMode::Full,
            reset: true,
            runtime: false,
            signing_key: None,
            fleet_key: None,
            release: None,
            rollback: false,
            compat: Compat::default(),
            micro_ota_method: MicroOtaMethod::Stream,
            delta: true,
            compress: true,
            wait: Some(DEFAULT_RESTART_WAIT),
            manifest_cache: None,
        }
    }
}

impl PushOptions {
    /// The options of a push of `project` in `mode`: the defaults, with the
    /// project's signing key and fleet key, release number (`release`),
    /// `compat` and manifest cache ([`Project::manifest_cache_dir`]).
    pub fn for_project(project: &Project, mode: PushMode) -> PushOptions {
        PushOptions {
            mode,
            signing_key: project.secrets.signing_key.clone(),
            fleet_key: project.secrets.fleet_key.clone(),
            release: project.config.release,
            compat: project.config.compat.clone().unwrap_or_default(),
            manifest_cache: Some(project.manifest_cache_dir()),
            ..PushOptions::default()
        }
    }
}

/// Progress of a push, as typed events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PushEvent {
    /// The release was accepted for staging.
    Started {
        /// Files to send.
        files: usize,
        /// File bytes to send.
        bytes: u64,
    },
    /// A file starts.
    File {
        /// Device path.
        path: String,
        /// Size in bytes.
        size: u64,
    },
    /// File bytes sent so far, of the total.
    Progress {
        /// Bytes sent.
        sent: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Everything is staged; the device is committing.
    Committing,
    /// The device already runs exactly this release: nothing was sent,
    /// nothing committed, no reset.
    UpToDate {
        /// Its version.
        version: String,
    },
    /// The release is committed and the device restarts; the push waits for
    /// it to answer again.
    Restarting,
    /// The release is active.
    Committed {
        /// Its version.
        version: String,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// Version of the committed release.
    pub version: String,
    /// Release number the release was signed with (0 for micro-ota devices).
    pub release: u64,
    /// Files in the release.
    pub files_total: usize,
    /// Files sent (wholly or their missing part).
    pub files_sent: usize,
    /// Files not sent: unchanged on the device, or already staged by an interrupted push.
    pub files_skipped: usize,
    /// File bytes sent, before compression.
    pub file_bytes: u64,
    /// File bytes as they crossed the link (after compression).
    pub payload_bytes: u64,
    /// Whether an interrupted push was resumed.
    pub resumed: bool,
    /// Whether file payloads were compressed.
    pub compressed: bool,
    /// Bytes written to the link in all (framing and manifest included).
    pub wire_bytes: u64,
    /// Bytes read from the link during the push (replies, the device's
    /// manifest when a delta needed it).
    pub received_bytes: u64,
    /// Wall time of the push (the wait for the restart included).
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// The device already ran this release: nothing was committed.
    pub up_to_date: bool,
    /// How long the device took to answer again after its reset, when the
    /// push waited for it ([`PushOptions::wait`]).
    #[serde(serialize_with = "opt_secs")]
    pub restart: Option<Duration>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

const READ_CHUNK: usize = 32 * 1024;

/// How long a push asks again when the device answers `busy` (it may still
/// be dropping a connection that was cut off).
const BUSY_GRACE: Duration = Duration::from_secs(2);

impl Device {
    /// Push the files of `manifest`, read from `root`, and commit them as
    /// one release: [`Device::push_bundle`] of [`Bundle::from_dir`].
    ///
    /// # Errors
    ///
    /// As [`Device::push_bundle`].
    pub async fn push(
        &mut self,
        root: &Path,
        manifest: &Manifest,
        opts: &PushOptions,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<PushReport> {
        let bundle = Bundle::from_dir(root, manifest.clone());
        self.push_bundle(&bundle, opts, progress).await
    }

    /// Push the files of `bundle` and commit them as one release.
    ///
    /// `progress` is called with [`PushEvent`]s as the push goes on. After a
    /// successful push with `reset` the device restarts; with
    /// [`PushOptions::wait`] (the default) over TCP the push then waits until
    /// it answers again on the new release, and this `Device` is connected
    /// to it again. Otherwise the connection is closed.
    ///
    /// When the device already runs exactly this release (same version,
    /// same files; with `delta`), nothing is committed and the report says
    /// [`up_to_date`](PushReport::up_to_date).
    ///
    /// Dropping the future part-way cancels the push: the connection is
    /// reset before anything else is done with it (see [`Device::cancel`]),
    /// so nothing queued (a commit) reaches the device, and what it staged
    /// stays resumable.
    pub async fn push_bundle(
        &mut self,
        bundle: &Bundle,
        opts: &PushOptions,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<PushReport> {
        let guard = self.push_guard();
        let mut res = self.push_and_wait(bundle, opts, progress).await;
        // `busy` right after another push was cut off: the device may not
        // have seen that connection drop yet. Ask again for a moment.
        let give_up = Instant::now() + BUSY_GRACE;
        while matches!(
            &res,
            Err(Error::Device {
                code: DeviceErrorCode::Busy,
                ..
            })
        ) && self.reconnectable()
            && Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.reconnect(BUSY_GRACE).await.is_err() {
                break;
            }
            res = self.push_and_wait(bundle, opts, progress).await;
        }
        guard.done();
        res
    }

    async fn push_and_wait(
        &mut self,
        bundle: &Bundle,
        opts: &PushOptions,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<PushReport> {
        let start = Instant::now();
        let wire_before = self.bytes_sent();
        let received_before = self.bytes_received();
        let mut manifest = bundle.manifest().clone();
        let tally = match self.peer() {
            Peer::Uota(_) => self.push_uota(bundle, &manifest, opts, progress).await?,
            Peer::MicroOta => {
                // micro-ota devices read their password and key from the
                // pushed config/ota.json: send it as micro-ota's CLI does.
                let with_auth = micro_ota_bundle(bundle, self.options().password.as_ref(), opts)?;
                let bundle = with_auth.as_ref().unwrap_or(bundle);
                manifest = bundle.manifest().clone();
                let total: u64 = manifest.files.iter().map(|f| f.size).sum();
                if let Some(key) = &opts.signing_key {
                    manifest.sign(key);
                } else if opts.fleet_key.is_some() {
                    return Err(Error::InvalidArgument(
                        "micro-ota devices have no device id to derive a key for: configure signingKey".into(),
                    ));
                }
                // A delta: micro-ota's start_ota session commits what it is
                // sent and keeps the rest, so only the files the device's
                // own manifest lacks or lists with other bytes go.
                let send = if opts.delta {
                    micro_ota::installed_files(self)
                        .await?
                        .map(|held| {
                            crate::protocol::micro_ota::changed_files(&manifest.files, &held)
                        })
                        .filter(|send| send.len() < manifest.files.len())
                } else {
                    None
                };
                let (files_sent, sent_bytes) = match &send {
                    Some(send) => manifest
                        .files
                        .iter()
                        .filter(|f| send.contains(&f.path))
                        .fold((0, 0), |(n, b), f| (n + 1, b + f.size)),
                    None => (manifest.files.len(), total),
                };
                match (opts.micro_ota_method, &send) {
                    (MicroOtaMethod::Stream, None) => {
                        let key = opts.signing_key.as_ref();
                        micro_ota::push_stream(self, bundle, &manifest, key, total, progress)
                            .await?
                    }
                    _ => {
                        micro_ota::push_session(
                            self,
                            bundle,
                            &manifest,
                            send.as_ref(),
                            sent_bytes,
                            progress,
                        )
                        .await?
                    }
                }
                Tally {
                    files_sent,
                    files_skipped: manifest.files.len() - files_sent,
                    file_bytes: sent_bytes,
                    payload_bytes: sent_bytes,
                    ..Tally::default()
                }
            }
        };
        if tally.up_to_date {
            progress(&PushEvent::UpToDate {
                version: manifest.version.clone(),
            });
        } else {
            progress(&PushEvent::Committed {
                version: manifest.version.clone(),
            });
        }
        let wire_bytes = self.bytes_sent() - wire_before;
        let received_bytes = self.bytes_received() - received_before;
        let mut restart = None;
        let uota_peer = matches!(self.peer(), Peer::Uota(_));
        if let (true, false, true, Some(wait), true) = (
            opts.reset,
            tally.up_to_date,
            uota_peer,
            opts.wait,
            self.reconnectable(),
        ) {
            progress(&PushEvent::Restarting);
            restart = Some(self.wait_until_running(&manifest.version, wait).await?);
        }
        Ok(PushReport {
            version: manifest.version.clone(),
            release: tally.release,
            files_total: manifest.files.len(),
            files_sent: tally.files_sent,
            files_skipped: tally.files_skipped,
            file_bytes: tally.file_bytes,
            payload_bytes: tally.payload_bytes,
            resumed: tally.resumed,
            compressed: tally.compressed,
            wire_bytes,
            received_bytes,
            elapsed: start.elapsed(),
            up_to_date: tally.up_to_date,
            restart,
        })
    }

    /// After a commit with reset: wait for the connection to close (the
    /// device going down), reconnect, and check that the device runs
    /// `version`. Returns the time from the close to the device answering.
    async fn wait_until_running(&mut self, version: &str, wait: Duration) -> Result<Duration> {
        self.wait_for_close(Duration::from_secs(10)).await;
        let took = self.reconnect(wait).await?;
        let running = self.version().await?;
        if running != version {
            return Err(Error::ReleaseRefused {
                reason: "rolled_back".into(),
                message: format!(
                    "the device restarted on {running}, not {version}: its boot guard rolled the new release back (see the device's log)"
                ),
            });
        }
        tracing::info!(version, took = ?took, "device answers again on the new release");
        Ok(took)
    }

    /// The device's active manifest: the kept copy when the device's
    /// `summary` digest matches it, else read from the device (and kept).
    async fn active_manifest_cached(
        &mut self,
        opts: &PushOptions,
        summary: Option<Summary>,
    ) -> Result<Manifest> {
        let Some(path) = self.manifest_cache_file(opts) else {
            return self.active_manifest().await;
        };
        if let (Ok(kept), Some(summary)) = (std::fs::read(&path), summary) {
            if crate::auth::sha256_hex(&kept) == summary.sha256 {
                if let Ok(m) = Manifest::parse_lines(&summary.version, &kept) {
                    tracing::debug!(path = %path.display(), "the device's manifest, as kept");
                    return Ok(m);
                }
            }
        }
        let active = self.active_manifest().await?;
        self.keep_manifest(opts, &active);
        Ok(active)
    }

    /// `<cache>/<device id>.txt`, when there is a cache and the id is a
    /// plain file name.
    fn manifest_cache_file(&self, opts: &PushOptions) -> Option<std::path::PathBuf> {
        let dir = opts.manifest_cache.as_ref()?;
        let id = self.device_id();
        let plain = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        (plain && !id.starts_with('.')).then(|| dir.join(format!("{id}.txt")))
    }

    /// Keep `m` as the device's manifest (best effort: a cache).
    fn keep_manifest(&self, opts: &PushOptions, m: &Manifest) {
        let Some(path) = self.manifest_cache_file(opts) else {
            return;
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, m.manifest_lines()));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "could not keep the device's manifest");
        }
    }

    /// Whether the push asks for no release number beyond what the device
    /// has (so that an unchanged release needs no new commit).
    fn same_release_number(&self, opts: &PushOptions) -> bool {
        match opts.release {
            None => true,
            Some(n) => n <= self.highest_release() && !opts.rollback,
        }
    }

    /// uota's push, driven by its sans-IO plan ([`PushPlan`]): this
    /// function only does what the plan asks, on the connection.
    async fn push_uota(
        &mut self,
        bundle: &Bundle,
        manifest: &Manifest,
        opts: &PushOptions,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<Tally> {
        let max_frame = self.hello().map(|h| h.max_frame).unwrap_or(4096);
        // Over a console with flow control of its own (native USB, a
        // pseudo-terminal) the link carries bytes faster than the board
        // inflates them: send them as they are there.
        let fast_console = self.console && self.capabilities.flow_control;
        let compress =
            opts.compress && !fast_console && self.hello().is_some_and(|h| h.has_cap("deflate"));
        let mut plan = PushPlan::new(
            manifest,
            PlanSettings {
                mode: opts.mode,
                delta: opts.delta,
                same_release: self.same_release_number(opts),
                kept_manifest: self.manifest_cache_file(opts).is_some_and(|p| p.is_file()),
            },
        );
        let mut tally = Tally {
            compressed: compress,
            ..Tally::default()
        };
        let mut sender: Option<FileSender> = None;
        loop {
            match plan.step() {
                Step::ReadSummary => {
                    let summary = uota::active_summary(self).await?;
                    plan.handle(Input::Summary(summary))?;
                }
                Step::ReadActiveManifest { summary } => {
                    let active = match self.active_manifest_cached(opts, summary).await {
                        Ok(m) => Some(m),
                        Err(Error::Device {
                            code: DeviceErrorCode::UnknownOp,
                            ..
                        }) => None,
                        Err(e) => return Err(e),
                    };
                    plan.handle(Input::ActiveManifest(active))?;
                }
                Step::UpToDate => {
                    tracing::info!(version = %manifest.version, "the device already runs this release");
                    return Ok(Tally {
                        release: self.highest_release(),
                        files_skipped: manifest.files.len(),
                        up_to_date: true,
                        ..Tally::default()
                    });
                }
                Step::Begin => {
                    let (release, resumed) = self.begin(manifest, opts, max_frame).await?;
                    tally.release = release;
                    plan.handle(Input::Begun { resumed })?;
                }
                Step::ReadStaged => {
                    let staged = uota::staged(self).await?;
                    plan.handle(Input::Staged(staged))?;
                }
                Step::SendFiles { files, resend } => {
                    let bytes: u64 = files.iter().map(|f| f.entry.size - f.offset).sum();
                    let sender = match &mut sender {
                        Some(s) => {
                            s.total += bytes;
                            s
                        }
                        None => {
                            progress(&PushEvent::Started {
                                files: files.len(),
                                bytes,
                            });
                            sender.insert(FileSender::new(max_frame, compress, bytes))
                        }
                    };
                    if resend {
                        tracing::info!(
                            files = files.len(),
                            "sending what the commit found missing"
                        );
                    }
                    for f in &files {
                        let src = bundle.source(&f.entry.path)?;
                        let cache = bundle.deflate_cache();
                        sender
                            .send(self, (src, cache), &f.entry, f.offset, &mut tally, progress)
                            .await?;
                    }
                    plan.handle(Input::FilesSent)?;
                }
                Step::Commit => {
                    progress(&PushEvent::Committing);
                    self.send_request(&Request::Commit { reset: opts.reset })
                        .await?;
                    self.flush().await?;
                    let wait = self.options().commit_timeout;
                    match self.read_response("commit", wait).await {
                        Ok(_) => plan.handle(Input::CommitAccepted)?,
                        Err(Error::Device { code, message, .. }) => {
                            plan.handle(Input::CommitRefused { code, message })?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::Committed { now_active } => {
                    // What the device runs now, kept for the next delta
                    // (checked against the device's summary before use).
                    if let Some(m) = now_active {
                        self.keep_manifest(opts, &m);
                    }
                    break;
                }
            }
        }
        tally.resumed = plan.resumed();
        tally.files_skipped = plan.files_skipped();
        if opts.reset {
            self.mark_closed();
        }
        Ok(tally)
    }

    /// Sign the release, prove the key when the device takes one, and send
    /// `begin` with the manifest lines. Returns the release number and
    /// whether the device resumed an interrupted push of this release.
    async fn begin(
        &mut self,
        manifest: &Manifest,
        opts: &PushOptions,
        max_frame: usize,
    ) -> Result<(u64, bool)> {
        let (claims, sig, key) = self.release_claims(manifest, opts)?;
        if let Some(key) = &key {
            // A device with a key takes changes only from a host that proved it.
            self.authenticate_with_key(key).await?;
            if !self
                .hello()
                .is_some_and(|h| h.accepts(crate::auth::AuthMethod::Key))
            {
                tracing::warn!(
                    "{} has no signing key: it takes this release without checking its signature, and anyone's after it; give it the key (install it with the project's secrets, or `uota key`)",
                    self.target()
                );
            }
        }
        let lines = manifest.manifest_lines();
        let begin = Request::Begin {
            version: manifest.version.clone(),
            mode: opts.mode,
            count: manifest.files.len(),
            sig,
            runtime: opts.runtime,
            release: claims.release,
            rollback: claims.rollback,
            device: claims.device.clone(),
            compat: claims.compat.clone(),
            // In a sealed session the manifest stream is bound too.
            mdigest: self
                .is_authenticated()
                .then(|| crate::auth::sha256_hex(&lines)),
        };
        self.send_request(&begin).await?;
        for chunk in line_chunks(&lines, max_frame) {
            self.send_frame(FrameType::Data, chunk).await?;
        }
        self.send_frame(FrameType::Data, &[]).await?;
        self.flush().await?;
        let wait = self.options().timeout;
        let began = self.read_response("begin", wait).await?;
        Ok((claims.release, began.bool_field("resumed")))
    }

    /// What the release signature of this push binds, and the signature
    /// (`None` when the push is not signed).
    fn release_claims(
        &self,
        manifest: &Manifest,
        opts: &PushOptions,
    ) -> Result<(ReleaseClaims, Option<String>, Option<SigningKey>)> {
        let hello = self.hello().cloned().unwrap_or_default();
        let release = match opts.release {
            Some(n) => n,
            None => hello.release.saturating_add(1),
        };
        if release > crate::release::MAX_RELEASE {
            return Err(Error::InvalidArgument(format!(
                "release {release} is above the largest release number, 2^53 ({}); \
if the device's floor was set that high, lower it with `uota floor N` (authenticated)",
                crate::release::MAX_RELEASE
            )));
        }
        let key = match (&opts.signing_key, &opts.fleet_key) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(fleet)) => {
                if hello.id.is_empty() {
                    return Err(Error::InvalidArgument(
                        "the device reports no id to derive its key from".into(),
                    ));
                }
                Some(fleet.derive(&hello.id))
            }
            (None, None) => None,
        };
        let claims = ReleaseClaims {
            release,
            rollback: opts.rollback,
            mode: opts.mode,
            runtime: opts.runtime,
            nonce: hello.nonce.clone(),
            device: hello.id.clone(),
            compat: opts.compat.clone(),
        };
        claims.compat.validate()?;
        let sig = match &key {
            Some(key) => Some(claims.sign(manifest, key)?),
            None => None,
        };
        Ok((claims, sig, key))
    }
}

/// What a push actually sent.
#[derive(Debug, Default)]
struct Tally {
    release: u64,
    files_sent: usize,
    files_skipped: usize,
    file_bytes: u64,
    payload_bytes: u64,
    resumed: bool,
    compressed: bool,
    up_to_date: bool,
}

/// Streams files as `file` requests plus DATA frames, compressed or not.
struct FileSender {
    compressor: Option<flate2::Compress>,
    buf: Vec<u8>,
    out: Vec<u8>,
    sent: u64,
    total: u64,
}

/// Window of the device's inflater: 2^10 = 1 KiB of RAM.
const DEFLATE_WINDOW_BITS: u8 = 10;

impl FileSender {
    fn new(max_frame: usize, compress: bool, total: u64) -> Self {
        // Leave room for zlib's worst case (stored blocks, header, checksum).
        let chunk = if compress {
            max_frame.saturating_sub(64).clamp(256, READ_CHUNK)
        } else {
            max_frame.min(READ_CHUNK)
        };
        Self {
            compressor: compress.then(|| {
                flate2::Compress::new_with_window_bits(
                    flate2::Compression::new(6),
                    true,
                    DEFLATE_WINDOW_BITS,
                )
            }),
            buf: vec![0; chunk],
            out: Vec::with_capacity(max_frame),
            sent: 0,
            total,
        }
    }

    /// One zlib stream holding the `n` bytes at `offset` of `entry` (in
    /// `buf`), into `out`: from `cache` when a push compressed them before.
    fn deflate(
        &mut self,
        n: usize,
        entry: &FileEntry,
        offset: u64,
        cache: &DeflateCache,
    ) -> Result<()> {
        if let Some(packed) = cache.get(&entry.sha256, offset, n) {
            self.out.clear();
            self.out.extend_from_slice(&packed);
            return Ok(());
        }
        self.compress(n)?;
        cache.put(&entry.sha256, offset, n, &self.out);
        Ok(())
    }

    /// One zlib stream holding the first `n` bytes of `buf`.
    fn compress(&mut self, n: usize) -> Result<()> {
        let c = self.compressor.as_mut().expect("compressing");
        c.reset();
        self.out.clear();
        let status = c
            .compress_vec(&self.buf[..n], &mut self.out, flate2::FlushCompress::Finish)
            .map_err(|e| Error::Protocol(format!("deflate failed: {e}")))?;
        if status != flate2::Status::StreamEnd {
            return Err(Error::Protocol(
                "deflate output exceeded the frame size".into(),
            ));
        }
        Ok(())
    }

    async fn send(
        &mut self,
        dev: &mut Device,
        (src, cache): (&FileSource, &DeflateCache),
        entry: &FileEntry,
        offset: u64,
        tally: &mut Tally,
        progress: &mut (dyn FnMut(&PushEvent) + Send),
    ) -> Result<()> {
        progress(&PushEvent::File {
            path: entry.path.clone(),
            size: entry.size,
        });
        let mut req = Request::File {
            path: entry.path.clone(),
            size: entry.size,
            sha256: entry.sha256_hex(),
            offset,
            enc: self.compressor.as_ref().map(|_| "deflate".to_string()),
        };
        let small = entry.size.saturating_sub(offset) <= self.buf.len() as u64;
        let result = async {
            let mut file = SourceReader::open(src).await?;
            if offset > 0 {
                file.seek(offset).await?;
            }
            if small && self.compressor.is_some() {
                // A file of one chunk goes compressed only when that makes it
                // smaller (tiny files grow by zlib's header and checksum).
                let n = file.read_full(&mut self.buf).await?;
                self.deflate(n, entry, offset, cache)?;
                let packed = self.out.len() < n;
                if let (false, Request::File { enc, .. }) = (packed, &mut req) {
                    *enc = None;
                }
                dev.send_request(&req).await?;
                if n > 0 {
                    let data = if packed {
                        &self.out[..]
                    } else {
                        &self.buf[..n]
                    };
                    dev.send_frame(FrameType::Data, data).await?;
                    tally.payload_bytes += data.len() as u64;
                }
                tally.file_bytes += n as u64;
                self.sent += n as u64;
                progress(&PushEvent::Progress {
                    sent: self.sent,
                    total: self.total,
                });
                return dev.send_frame(FrameType::Data, &[]).await;
            }
            dev.send_request(&req).await?;
            let mut at = offset;
            loop {
                let n = file.read_full(&mut self.buf).await?;
                if n == 0 {
                    break;
                }
                if self.compressor.is_some() {
                    self.deflate(n, entry, at, cache)?;
                    dev.send_frame(FrameType::Data, &self.out).await?;
                    tally.payload_bytes += self.out.len() as u64;
                } else {
                    dev.send_frame(FrameType::Data, &self.buf[..n]).await?;
                    tally.payload_bytes += n as u64;
                }
                tally.file_bytes += n as u64;
                self.sent += n as u64;
                at += n as u64;
                progress(&PushEvent::Progress {
                    sent: self.sent,
                    total: self.total,
                });
            }
            dev.send_frame(FrameType::Data, &[]).await
        }
        .await;
        match result {
            Ok(()) => {
                tally.files_sent += 1;
                Ok(())
            }
            Err(e @ (Error::Transport { .. } | Error::Timeout { .. })) => {
                Err(dev.explain_failure("file", e).await)
            }
            Err(e) => Err(e),
        }
    }
}

/// The bytes of a file being sent: an open local file, or bytes in memory.
pub(super) enum SourceReader<'a> {
    File(&'a Path, tokio::fs::File),
    Bytes(std::io::Cursor<&'a [u8]>),
}

impl<'a> SourceReader<'a> {
    pub(super) async fn open(src: &'a FileSource) -> Result<SourceReader<'a>> {
        match src {
            FileSource::Disk(path) => match tokio::fs::File::open(path).await {
                Ok(f) => Ok(SourceReader::File(path, f)),
                Err(e) => Err(Error::io(path, e)),
            },
            FileSource::Bytes(b) => Ok(SourceReader::Bytes(std::io::Cursor::new(b))),
        }
    }

    fn fail(&self, e: std::io::Error) -> Error {
        match self {
            SourceReader::File(path, _) => Error::io(path, e),
            SourceReader::Bytes(_) => Error::io("<bytes>", e),
        }
    }

    async fn seek(&mut self, offset: u64) -> Result<()> {
        let res = match self {
            SourceReader::File(_, f) => f.seek(std::io::SeekFrom::Start(offset)).await,
            SourceReader::Bytes(c) => c.seek(std::io::SeekFrom::Start(offset)).await,
        };
        res.map(drop).map_err(|e| self.fail(e))
    }

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let res = match self {
            SourceReader::File(_, f) => f.read(buf).await,
            SourceReader::Bytes(c) => c.read(buf).await,
        };
        res.map_err(|e| self.fail(e))
    }

    /// Fill `buf` as far as the file goes; returns the bytes read (0 at the end).
    async fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let k = self.read(&mut buf[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok(n)
    }

    pub(super) async fn read_to_end(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let res = match &mut self {
            SourceReader::File(_, f) => f.read_to_end(&mut out).await,
            SourceReader::Bytes(c) => c.read_to_end(&mut out).await,
        };
        res.map(|_| out).map_err(|e| self.fail(e))
    }
}

/// Split manifest lines into chunks of at most `max` bytes, on line boundaries.
fn line_chunks(lines: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, b) in lines.iter().enumerate() {
        if *b == b'\n' {
            if i + 1 - start > max && end > start {
                out.push(&lines[start..end]);
                start = end;
            }
            end = i + 1;
        }
    }
    if end > start {
        out.push(&lines[start..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_chunks;

    #[test]
    fn chunks_keep_whole_lines() {
        let lines = b"aaaa\nbbbb\ncc\ndddddd\n";
        let chunks = line_chunks(lines, 10);
        assert_eq!(chunks, vec![&b"aaaa\nbbbb\n"[..], &b"cc\ndddddd\n"[..]]);
        assert_eq!(chunks.concat(), lines.to_vec());
        assert!(line_chunks(b"", 10).is_empty());
    }
}
