//! Power-cut matrix: a virtual device on a littlefs image loses power at every
//! mutating block operation of an update (or a strided subset of them), boots
//! again, and must then hold exactly one whole release, never a mix.
//!
//! The cut comes from the boot shim (`device/sim/simboot.py`): with
//! `UOTA_SIM_CUT_AFTER=N` its block device kills the interpreter with SIGKILL
//! at the N-th write or erase of a running count kept in `UOTA_SIM_WRITE_LOG`
//! (the count goes on across the resets of one scenario), before performing it
//! or, with `UOTA_SIM_CUT_MODE=torn`, after writing half of it. A dry run with
//! the log alone learns how many operations (W) a scenario performs.
//!
//! Scenarios, each from a snapshot of the image:
//! - update: release A (1.0.0) installed and confirmed; push release B (2.0.0:
//!   files changed, one added, one removed, others kept); the device commits,
//!   resets and boots B. After a cut anywhere in that, the device must hold
//!   exactly A or exactly B.
//! - rollback: release B installed and confirmed; push release C (3.0.0)
//!   whose app raises at start, so the device uses up its boot attempts and
//!   restores B by itself (docs/protocol.md section 7). After a cut anywhere
//!   in that, the device must end up on exactly B.
//!
//! "Exactly" means: every app file (anything outside the runtime, `data/`,
//! the secrets file and the runtime's `ota_*` state) has that release's bytes,
//! none is missing or extra, `/ota_version.json`, `/ota_manifest.txt` and the
//! version reported over the wire are that release's, and `/data/keep.json`
//! is byte-identical.
//!
//! After the cut the device boots again with the power on for good, and is
//! checked once it has settled (its server is up, its release is not
//! pending); the check reads the image with the shim's export.
//!
//! The normal tests run a strided subset of the cut points (the first and
//! last five and 40 spread evenly, cut before the operation; a quarter of
//! that torn); the `#[ignore]`d `full_matrix_*` tests run every point in both
//! modes (`benches/power_cut.sh`). Knobs:
//! - `UOTA_POWER_CUT_JOBS`: devices at once (default 2);
//! - `UOTA_POWER_CUT_SPREAD`: evenly spread points of the strided run (40);
//! - `UOTA_POWER_CUT_ONLY=66,155:torn`: just these points (both modes unless
//!   one is given);
//! - `UOTA_POWER_CUT_KEEP=<folder>`: keep, per point, the image as the cut
//!   left it (`*.cut.img`) and as the recovery left it (`*.end.img`), the
//!   console and the operation log (`<n> w <block> <offset> <length>` or
//!   `<n> e <block>` per operation; also the dry run's), for a post-mortem
//!   (`UOTA_SIM_IMAGE=x.img UOTA_SIM_EXPORT=dir micropython simboot.py`
//!   copies an image's files out without booting it).
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uota::device::{ConnectOptions, Device, DeviceInfo, PushOptions};
use uota::manifest::{FileEntry, Manifest};
use uota::sim::{SimOptions, Storage};

const IMAGE_SIZE: u64 = uota::sim::DEFAULT_IMAGE_SIZE;
const RESET: i32 = uota::sim::RESET_EXIT_CODE;

// --- releases -----------------------------------------------------------------

/// A release: its files, written under `dir`, and its manifest.
struct Release {
    name: &'static str,
    version: String,
    dir: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
    manifest: Manifest,
}

impl Release {
    fn new(name: &'static str, version: &str, dir: PathBuf, files: Vec<(&str, Vec<u8>)>) -> Self {
        let mut map = BTreeMap::new();
        let mut entries = Vec::new();
        for (path, data) in files {
            let dest = dir.join(path);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, &data).unwrap();
            entries.push(FileEntry::from_bytes(path, &data));
            map.insert(path.to_string(), data);
        }
        Release {
            name,
            version: version.to_string(),
            dir,
            files: map,
            manifest: Manifest::new(version, entries).unwrap(),
        }
    }

    fn sha(&self, path: &str) -> Option<String> {
        self.files.get(path).map(|d| common::sha256_hex(d))
    }
}

/// Python source of about `size` bytes: a module that defines some data.
fn module(tag: &str, size: usize) -> Vec<u8> {
    let mut s = format!("# {tag}: generated module\nNAME = {tag:?}\nTABLE = [\n");
    let mut i = 0u32;
    while s.len() + 40 < size {
        let h = common::sha256_hex(format!("{tag}/{i}").as_bytes());
        s.push_str(&format!("    ({i}, \"{}\"),\n", &h[..24]));
        i += 1;
    }
    s.push_str("]\n");
    s.into_bytes()
}

/// `main.py` of a working release: imports its modules and confirms itself.
fn good_main(version: &str, modules: &[&str]) -> Vec<u8> {
    format!(
        "# release {version}\n\
         def _confirm():\n\
         \x20   try:\n\
         \x20       import uota\n\
         \x20       uota.confirm()\n\
         \x20   except (ImportError, AttributeError):\n\
         \x20       pass  # a runtime without the release life cycle\n\
         \n\
         async def run():\n\
         \x20   from app import {mods}\n\
         \x20   _confirm()\n\
         \x20   print(\"[app] release {version} up\")\n",
        mods = modules.join(", ")
    )
    .into_bytes()
}

fn config(version: &str, tag: &str) -> Vec<u8> {
    // The port is the sim's (UOTA_SIM_PORT beats it); confirmAfter 0: only
    // the app's uota.confirm() confirms, so the write count does not depend
    // on timing.
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": version,
        "port": 2018,
        "transports": ["wifi_tcp"],
        "confirmAfter": 0,
        "release": tag,
    }))
    .unwrap()
}

fn releases(root: &Path) -> (Release, Release, Release) {
    let init = b"# the app package\n".to_vec();
    let a = Release::new(
        "A",
        "1.0.0",
        root.join("release-a"),
        vec![
            ("main.py", good_main("1.0.0", &["core", "util"])),
            ("app/__init__.py", init.clone()),
            ("app/core.py", module("core-a", 6000)),
            ("app/util.py", module("util", 1500)),
            ("lib/helper.py", module("helper", 2200)),
            ("config/ota.json", config("1.0.0", "A")),
        ],
    );
    // B: main, core and config change, extra is added, helper is removed,
    // the package file and util are kept.
    let b = Release::new(
        "B",
        "2.0.0",
        root.join("release-b"),
        vec![
            ("main.py", good_main("2.0.0", &["core", "util", "extra"])),
            ("app/__init__.py", init.clone()),
            ("app/core.py", module("core-b", 7000)),
            ("app/util.py", module("util", 1500)),
            ("app/extra.py", module("extra", 3000)),
            ("config/ota.json", config("2.0.0", "B")),
        ],
    );
    // C: B with an app that raises at start, core changed, more added, util removed.
    let c = Release::new(
        "C",
        "3.0.0",
        root.join("release-c"),
        vec![
            (
                "main.py",
                b"# release 3.0.0: broken on purpose\n\
                  async def run():\n\
                  \x20   raise RuntimeError(\"release 3.0.0 fails at start\")\n"
                    .to_vec(),
            ),
            ("app/__init__.py", init),
            ("app/core.py", module("core-c", 6500)),
            ("app/extra.py", module("extra", 3000)),
            ("app/more.py", module("more", 2500)),
            ("config/ota.json", config("3.0.0", "C")),
        ],
    );
    (a, b, c)
}

/// `/data/keep.json`: app data no update may touch (bigger than littlefs
/// inlines, so it lives in blocks of its own).
fn keep_json() -> Vec<u8> {
    let readings: Vec<u32> = (0..300).map(|i| i * 7919 % 1000).collect();
    serde_json::to_vec(&serde_json::json!({
        "serial": "PC-0001",
        "note": "written once, before any release; must survive every cut",
        "readings": readings,
    }))
    .unwrap()
}

// --- the interpreter and one device slot ----------------------------------------

/// The interpreter and the boot shim, shared by every device of a test.
struct Interp {
    exe: PathBuf,
    shim: PathBuf,
}

impl Interp {
    fn new(dir: &Path) -> Interp {
        let found = uota::sim::find_micropython().expect("micropython on PATH");
        // A version-manager shim in front of the interpreter costs ~0.1 s per
        // start; the interpreter knows where it really lives.
        let exe = std::process::Command::new(&found)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| PathBuf::from(s.trim()))
            .filter(|p| p.is_file())
            .unwrap_or(found);
        let shim = uota::templates::write_sim_shim(dir).unwrap();
        Interp { exe, shim }
    }
}

/// One virtual device: an image file, an address, a console log.
struct Slot {
    interp: Arc<Interp>,
    dir: PathBuf,
    image: PathBuf,
    host: String,
    port: u16,
    console: PathBuf,
    writes: PathBuf,
}

impl Slot {
    fn new(interp: Arc<Interp>, dir: PathBuf) -> Arc<Slot> {
        std::fs::create_dir_all(&dir).unwrap();
        let (host, port) = common::unique_addr();
        Arc::new(Slot {
            interp,
            image: dir.join("flash.img"),
            console: dir.join("console.log"),
            writes: dir.join("writes.log"),
            dir,
            host,
            port,
        })
    }

    /// Options to provision the image with. The config it writes gets a
    /// fixed port (the shim's UOTA_SIM_PORT is what the device listens on):
    /// littlefs seeds its block allocator from the metadata it mounts, so
    /// identical contents give the same operations, and W, on every run.
    fn sim_options(&self) -> SimOptions {
        let mut o = SimOptions::folder(&self.dir, &self.host, 2018);
        o.storage = Storage::Image {
            path: self.image.clone(),
            size: IMAGE_SIZE,
        };
        o.interpreter = Some(self.interp.exe.clone());
        o
    }

    fn command(&self, env: &[(&str, String)]) -> Command {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console)
            .unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(&self.interp.exe);
        cmd.arg(&self.interp.shim)
            .env("UOTA_SIM_IMAGE", &self.image)
            .env("UOTA_SIM_IMAGE_SIZE", IMAGE_SIZE.to_string())
            .env("UOTA_SIM_HOST", &self.host)
            .env("UOTA_SIM_PORT", self.port.to_string());
        for var in [
            "UOTA_SIM_ROOT",
            "UOTA_SIM_INSTALL",
            "UOTA_SIM_EXPORT",
            "UOTA_SIM_WRITE_LOG",
            "UOTA_SIM_CUT_AFTER",
            "UOTA_SIM_CUT_MODE",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        cmd
    }

    /// Run the shim once to completion (install or export).
    async fn run_once(&self, env: &[(&str, String)]) -> Result<(), String> {
        let status = self.command(env).status().await.unwrap();
        if status.success() {
            Ok(())
        } else {
            Err(format!("shim {env:?} failed ({status})"))
        }
    }

    /// Copy the image's tree out to `dest` (a damaged image is an error).
    async fn export(&self, dest: &Path) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(dest);
        self.run_once(&[("UOTA_SIM_EXPORT", dest.display().to_string())])
            .await
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Running count of mutating operations and whether the power was cut.
    fn write_log(&self) -> (u64, bool) {
        let text = std::fs::read_to_string(&self.writes).unwrap_or_default();
        let mut count = 0;
        let mut cut = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("cut ") {
                cut = true;
                if let Some(n) = rest.split(' ').next().and_then(|n| n.parse().ok()) {
                    count = n;
                }
            } else if let Some(n) = line.split(' ').next().and_then(|n| n.parse().ok()) {
                count = n;
            }
        }
        (count, cut)
    }

    /// The running count at which each process of the last run started.
    fn boot_starts(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.writes)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("boot ")?.parse().ok())
            .collect()
    }

    /// Boot the device under a supervisor that restarts it after each reset.
    /// `armed` is the environment of the boots until the power is cut; after
    /// the cut the device boots without it (the power is back for good).
    /// `at_cut`: copy the image there when the power is cut (for a post-mortem).
    fn boot(
        self: &Arc<Self>,
        armed: Vec<(&'static str, String)>,
        at_cut: Option<PathBuf>,
    ) -> Running {
        let _ = std::fs::remove_file(&self.writes);
        let cut = Arc::new(AtomicBool::new(false));
        let crashes = Arc::new(AtomicU32::new(0));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let slot = Arc::clone(self);
        let (cut2, crashes2) = (Arc::clone(&cut), Arc::clone(&crashes));
        let task = tokio::spawn(async move {
            loop {
                let armed_now = !cut2.load(Ordering::SeqCst);
                let env: &[(&str, String)] = if armed_now { &armed } else { &[] };
                let mut child = slot.command(env).spawn().unwrap();
                tokio::select! {
                    status = child.wait() => {
                        let status = status.unwrap();
                        if armed_now && slot.write_log().1 {
                            cut2.store(true, Ordering::SeqCst);
                            if let Some(dest) = &at_cut {
                                let _ = std::fs::copy(&slot.image, dest);
                            }
                        } else if status.code() != Some(RESET) {
                            crashes2.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                    _ = &mut stop_rx => {
                        let _ = child.kill().await;
                        return;
                    }
                }
            }
        });
        Running {
            slot: Arc::clone(self),
            cut,
            crashes,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

/// A supervised device.
struct Running {
    slot: Arc<Slot>,
    cut: Arc<AtomicBool>,
    crashes: Arc<AtomicU32>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn cut_fired(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Exits that were neither a reset nor the power cut.
    fn crashes(&self) -> u32 {
        self.crashes.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    fn options(connect: Duration, timeout: Duration) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: connect,
            timeout,
            commit_timeout: Duration::from_secs(30),
            ..ConnectOptions::default()
        }
    }

    async fn connect(&self, within: Duration) -> uota::Result<Device> {
        let deadline = Instant::now() + within;
        let opts = Self::options(Duration::from_secs(2), Duration::from_secs(10));
        loop {
            match Device::connect_tcp(&self.slot.host, self.slot.port, opts.clone()).await {
                Ok(d) => return Ok(d),
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            uota::ErrorKind::Transport | uota::ErrorKind::Timeout
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(30)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn push(&self, rel: &Release) -> uota::Result<()> {
        let mut dev = self.connect(Duration::from_secs(20)).await?;
        dev.push(
            &rel.dir,
            &rel.manifest,
            // The scenario controls the device's power: return at the commit.
            &PushOptions {
                wait: None,
                ..PushOptions::default()
            },
            &mut |_| {},
        )
        .await
        .map(|_| ())
    }

    async fn info(&self) -> uota::Result<DeviceInfo> {
        let opts = Self::options(Duration::from_millis(500), Duration::from_secs(3));
        let mut dev = Device::connect_tcp(&self.slot.host, self.slot.port, opts).await?;
        dev.info().await
    }

    /// Wait until the device is settled: its boot reached "server up", its
    /// release is not pending, and either the power was cut (it is on the
    /// power that stays) or no write happened for a while (the cut point lies
    /// beyond this run's writes, or this is a dry run).
    async fn settled(&self, within: Duration) -> Result<DeviceInfo, String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer");
        loop {
            if Instant::now() > deadline {
                return Err(format!("never settled within {within:?}; last: {last}"));
            }
            match self.info().await {
                Ok(info) if is_settled(&info) => {
                    if self.cut_fired() {
                        // Let a write that follows the confirmation finish.
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        return Ok(info);
                    }
                    let before = self.slot.write_log().0;
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    if !self.cut_fired() && self.slot.write_log().0 == before {
                        return Ok(info);
                    }
                }
                Ok(info) => last = format!("{} {:?}", info.version, info.extra),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn is_settled(info: &DeviceInfo) -> bool {
    let clean = info
        .extra
        .get("boot")
        .and_then(|b| b.get("clean"))
        .and_then(|c| c.as_bool())
        .unwrap_or(true);
    let pending = info
        .extra
        .get("release")
        .and_then(|r| r.get("state"))
        .and_then(|s| s.as_str())
        == Some("pending");
    clean && !pending
}

// --- checking a device's filesystem -----------------------------------------------

fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, base, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// A file of the app, as opposed to the runtime, its state and the app's data.
fn is_app_file(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or("");
    !(path == "boot.py"
        || path.starts_with("lib/uota/")
        || path == "config/.ota.secrets.json"
        || top == "data"
        || top.starts_with("ota_")
        || top.starts_with('.'))
}

/// Which of `releases` the exported filesystem in `dir` holds exactly (its
/// index), or what is wrong with it.
fn classify(
    dir: &Path,
    releases: &[&Release],
    keep: &[u8],
    wire_version: &str,
) -> Result<usize, String> {
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    let app: BTreeMap<&str, String> = files
        .iter()
        .filter(|(p, _)| is_app_file(p))
        .map(|(p, d)| (p.as_str(), common::sha256_hex(d)))
        .collect();
    let mut problems = Vec::new();
    if files.get("data/keep.json").map(Vec::as_slice) != Some(keep) {
        problems.push(format!(
            "data/keep.json changed ({})",
            files
                .get("data/keep.json")
                .map(|d| format!("{} bytes", d.len()))
                .unwrap_or_else(|| "missing".into())
        ));
    }
    let found = releases.iter().position(|r| {
        r.files.len() == app.len() && app.iter().all(|(p, sha)| r.sha(p).as_ref() == Some(sha))
    });
    match found {
        None => {
            // Describe the mix: whose bytes each app file holds.
            let mut paths: BTreeSet<&str> = app.keys().copied().collect();
            for r in releases {
                paths.extend(r.files.keys().map(String::as_str));
            }
            let mut mix = Vec::new();
            for p in paths {
                let whose: Vec<&str> = match app.get(p) {
                    None => vec!["missing"],
                    Some(sha) => {
                        let w: Vec<&str> = releases
                            .iter()
                            .filter(|r| r.sha(p).as_ref() == Some(sha))
                            .map(|r| r.name)
                            .collect();
                        if w.is_empty() {
                            vec!["foreign bytes"]
                        } else {
                            w
                        }
                    }
                };
                mix.push(format!("{p}={}", whose.join("/")));
            }
            problems.push(format!("app files are a mix: {}", mix.join(" ")));
        }
        Some(i) => {
            let r = releases[i];
            let version = files
                .get("ota_version.json")
                .and_then(|d| serde_json::from_slice::<serde_json::Value>(d).ok())
                .and_then(|v| v.get("version").and_then(|s| s.as_str()).map(String::from));
            if version.as_deref() != Some(r.version.as_str()) {
                problems.push(format!(
                    "files are {} but ota_version.json says {version:?}",
                    r.name
                ));
            }
            if wire_version != r.version {
                problems.push(format!(
                    "files are {} but the device reports version {wire_version}",
                    r.name
                ));
            }
            let manifest = files
                .get("ota_manifest.txt")
                .and_then(|d| Manifest::parse_lines(&r.version, d).ok());
            if manifest.as_ref().map(|m| &m.files) != Some(&r.manifest.files) {
                problems.push(format!(
                    "files are {} but ota_manifest.txt is not its manifest",
                    r.name
                ));
            }
        }
    }
    match (found, problems.is_empty()) {
        (Some(i), true) => Ok(i),
        _ => Err(problems.join("; ")),
    }
}

// --- scenarios ------------------------------------------------------------------

/// What every test needs: the interpreter, the releases, scratch space.
struct Bench {
    tmp: tempfile::TempDir,
    interp: Arc<Interp>,
    a: Arc<Release>,
    b: Arc<Release>,
    c: Arc<Release>,
    keep: Arc<Vec<u8>>,
    slots: AtomicUsize,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let interp = Arc::new(Interp::new(tmp.path()));
        let (a, b, c) = releases(tmp.path());
        Bench {
            interp,
            a: Arc::new(a),
            b: Arc::new(b),
            c: Arc::new(c),
            keep: Arc::new(keep_json()),
            slots: AtomicUsize::new(0),
            tmp,
        }
    }

    fn slot(&self) -> Arc<Slot> {
        let n = self.slots.fetch_add(1, Ordering::SeqCst);
        Slot::new(
            Arc::clone(&self.interp),
            self.tmp.path().join(format!("slot{n}")),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A fresh device with `/data/keep.json`, release A pushed and confirmed.
    /// Returns the snapshot of its image.
    async fn install_a(&self, slot: &Arc<Slot>) -> PathBuf {
        let _ = std::fs::remove_file(&slot.image);
        assert!(uota::sim::provision(&slot.sim_options()).await.unwrap());
        let data = slot.dir.join("install");
        std::fs::create_dir_all(data.join("data")).unwrap();
        std::fs::write(data.join("data/keep.json"), &*self.keep).unwrap();
        slot.run_once(&[("UOTA_SIM_INSTALL", data.display().to_string())])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", slot.console_tail()));
        let dev = slot.boot(Vec::new(), None);
        dev.push(&self.a).await.expect("push A");
        let info = dev
            .settled(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("A: {e}\n{}", slot.console_tail()));
        assert_eq!(info.version, self.a.version);
        dev.stop().await;
        let snapshot = self.path("baseline-a.img");
        std::fs::copy(&slot.image, &snapshot).unwrap();
        let out = slot.dir.join("export");
        slot.export(&out).await.unwrap();
        let got = classify(&out, &[&self.a], &self.keep, &info.version);
        assert_eq!(got, Ok(0), "baseline A");
        snapshot
    }

    /// Run a scenario without a cut, counting its mutating operations.
    /// Returns W and a snapshot of the image it ends with.
    async fn dry_run(&self, slot: &Arc<Slot>, sc: &Scenario) -> (u64, PathBuf) {
        std::fs::copy(&sc.baseline, &slot.image).unwrap();
        let dev = slot.boot(
            vec![("UOTA_SIM_WRITE_LOG", slot.writes.display().to_string())],
            None,
        );
        dev.push(&sc.push).await.expect("dry-run push");
        let info = dev
            .settled(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", sc.name, slot.console_tail()));
        assert_eq!(dev.crashes(), 0, "{}", slot.console_tail());
        dev.stop().await;
        let (w, cut) = slot.write_log();
        assert!(!cut && w > 0);
        if let Some(d) = std::env::var_os("UOTA_POWER_CUT_KEEP") {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            let _ = std::fs::copy(&slot.writes, d.join(format!("{}-dry.writes.log", sc.slug)));
        }
        let starts = slot.boot_starts();
        let phases: Vec<String> = starts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let end = starts.get(i + 1).copied().unwrap_or(w);
                format!("boot {}: ops {}..={end}", i + 1, s + 1)
            })
            .collect();
        println!("[{}] dry run: {}", sc.name, phases.join(", "));
        let out = slot.dir.join("export");
        slot.export(&out).await.unwrap();
        let got = classify(&out, &sc.releases(), &self.keep, &info.version);
        assert_eq!(
            got.map(|i| sc.releases()[i].name),
            Ok(sc.settles_on),
            "{}: the uncut run must end on {}\n{}",
            sc.name,
            sc.settles_on,
            slot.console_tail()
        );
        let snapshot = self.path(&format!("{}-end.img", sc.name));
        std::fs::copy(&slot.image, &snapshot).unwrap();
        (w, snapshot)
    }
}

struct Scenario {
    name: &'static str,
    /// File-name friendly name.
    slug: &'static str,
    baseline: PathBuf,
    push: Arc<Release>,
    /// Releases the device's state is told apart by.
    known: Vec<Arc<Release>>,
    /// Names of the releases a device may hold after a cut.
    allowed: Vec<&'static str>,
    /// The release an uncut run ends on.
    settles_on: &'static str,
}

impl Scenario {
    fn releases(&self) -> Vec<&Release> {
        self.known.iter().map(|r| &**r).collect()
    }
}

#[derive(Debug)]
struct PointResult {
    n: u64,
    torn: bool,
    cut: bool,
    outcome: Result<&'static str, String>,
    crashes: u32,
}

/// Restore the baseline, cut the power at the n-th operation, recover, check.
async fn run_point(
    bench: &Bench,
    slot: &Arc<Slot>,
    sc: &Scenario,
    n: u64,
    torn: bool,
) -> PointResult {
    let _ = std::fs::remove_file(&slot.console);
    std::fs::copy(&sc.baseline, &slot.image).unwrap();
    let mode = if torn { "torn" } else { "before" };
    // UOTA_POWER_CUT_KEEP=<folder>: keep the image as the cut left it and as
    // the recovery left it, and the console, for a post-mortem.
    let keep = std::env::var_os("UOTA_POWER_CUT_KEEP").map(|d| {
        let d = PathBuf::from(d);
        std::fs::create_dir_all(&d).unwrap();
        d.join(format!("{}-{n}-{mode}", sc.slug))
    });
    let dev = slot.boot(
        vec![
            ("UOTA_SIM_WRITE_LOG", slot.writes.display().to_string()),
            ("UOTA_SIM_CUT_AFTER", n.to_string()),
            ("UOTA_SIM_CUT_MODE", mode.to_string()),
        ],
        keep.as_ref().map(|k| k.with_extension("cut.img")),
    );
    // The cut may kill the device in the middle of the push: ignore errors.
    let _ = dev.push(&sc.push).await;
    let settled = dev.settled(Duration::from_secs(45)).await;
    let cut = dev.cut_fired();
    let crashes = dev.crashes();
    dev.stop().await;
    if let Some(k) = &keep {
        let _ = std::fs::copy(&slot.image, k.with_extension("end.img"));
        let _ = std::fs::copy(&slot.console, k.with_extension("console.log"));
        let _ = std::fs::copy(&slot.writes, k.with_extension("writes.log"));
    }
    let outcome = match settled {
        Err(e) => Err(e),
        Ok(info) => {
            let out = slot.dir.join("export");
            let releases = sc.releases();
            match slot.export(&out).await {
                Err(e) => Err(e),
                Ok(()) => match classify(&out, &releases, &bench.keep, &info.version) {
                    Ok(i) if sc.allowed.contains(&releases[i].name) => Ok(releases[i].name),
                    Ok(i) => Err(format!("ended on release {}", releases[i].name)),
                    Err(e) => Err(e),
                },
            }
        }
    };
    let outcome =
        outcome.map_err(|e| format!("{e}\n--- console (last lines) ---\n{}", slot.console_tail()));
    PointResult {
        n,
        torn,
        cut,
        outcome,
        crashes,
    }
}

/// Run the cut points on `jobs` devices at once.
async fn run_matrix(
    bench: &Arc<Bench>,
    sc: &Arc<Scenario>,
    points: Vec<(u64, bool)>,
) -> Vec<PointResult> {
    let jobs = std::env::var("UOTA_POWER_CUT_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    let points = Arc::new(points);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let (bench, sc, points, next, results) = (
            Arc::clone(bench),
            Arc::clone(sc),
            Arc::clone(&points),
            Arc::clone(&next),
            Arc::clone(&results),
        );
        workers.push(tokio::spawn(async move {
            let slot = bench.slot();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(n, torn)) = points.get(i) else {
                    break;
                };
                let r = run_point(&bench, &slot, &sc, n, torn).await;
                results.lock().unwrap().push(r);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap());
    out.sort_by_key(|r| (r.torn, r.n));
    out
}

/// The first and last five cut points plus `spread` spread evenly over 1..=w.
fn strided(w: u64, spread: u64) -> Vec<u64> {
    let mut pts = BTreeSet::new();
    pts.extend(1..=w.min(5));
    pts.extend(w.saturating_sub(4).max(1)..=w);
    if w > 1 && spread > 1 {
        for i in 0..spread {
            pts.insert(1 + i * (w - 1) / (spread - 1));
        }
    }
    pts.into_iter().collect()
}

fn spread() -> u64 {
    std::env::var("UOTA_POWER_CUT_SPREAD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// Print the results; returns the number of bad outcomes.
fn report(sc: &Scenario, w: u64, results: &[PointResult], elapsed: Duration) -> usize {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = 0;
    for r in results {
        let mode = if r.torn { "torn" } else { "before" };
        match &r.outcome {
            Ok(name) => {
                let key = if r.cut {
                    name.to_string()
                } else {
                    format!("{name} (cut point not reached)")
                };
                *by.entry(key).or_default() += 1;
            }
            Err(e) => {
                bad += 1;
                println!(
                    "[{}] BAD cut at operation {} ({mode}), crashes {}: {e}",
                    sc.name, r.n, r.crashes
                );
            }
        }
        if r.crashes > 0 && r.outcome.is_ok() {
            println!(
                "[{}] note: cut at {} ({mode}): the device crashed {} time(s) before it settled",
                sc.name, r.n, r.crashes
            );
        }
    }
    for torn in [false, true] {
        // Outcome by cut point, as runs: "1-51:A 52-90:B".
        let mut runs: Vec<(u64, u64, String)> = Vec::new();
        for r in results.iter().filter(|r| r.torn == torn) {
            let o = match &r.outcome {
                Ok(name) if r.cut => name.to_string(),
                Ok(name) => format!("{name}(uncut)"),
                Err(_) => "BAD".to_string(),
            };
            match runs.last_mut() {
                Some(last) if last.2 == o => last.1 = r.n,
                _ => runs.push((r.n, r.n, o)),
            }
        }
        if !runs.is_empty() {
            let text: Vec<String> = runs
                .iter()
                .map(|(a, b, o)| {
                    if a == b {
                        format!("{a}:{o}")
                    } else {
                        format!("{a}-{b}:{o}")
                    }
                })
                .collect();
            let mode = if torn { "torn" } else { "before" };
            println!("[{}] {mode}: {}", sc.name, text.join(" "));
        }
    }
    println!(
        "[{}] W = {w} mutating operations; outcomes: {by:?}; {:.1} s ({:.2} s per point)",
        sc.name,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / results.len().max(1) as f64
    );
    println!("cut points: {}, bad outcomes: {bad}", results.len());
    bad
}

async fn update_scenario(bench: &Arc<Bench>) -> (Arc<Scenario>, u64) {
    let t = Instant::now();
    let slot = bench.slot();
    let baseline = bench.install_a(&slot).await;
    let sc = Scenario {
        name: "update A->B",
        slug: "update",
        baseline,
        push: Arc::clone(&bench.b),
        known: vec![Arc::clone(&bench.a), Arc::clone(&bench.b)],
        allowed: vec!["A", "B"],
        settles_on: "B",
    };
    let (w, _) = bench.dry_run(&slot, &sc).await;
    println!(
        "[{}] setup and dry run: {:.1} s, W = {w}",
        sc.name,
        t.elapsed().as_secs_f64()
    );
    (Arc::new(sc), w)
}

async fn rollback_scenario(bench: &Arc<Bench>) -> (Arc<Scenario>, u64) {
    let t = Instant::now();
    let slot = bench.slot();
    let baseline_a = bench.install_a(&slot).await;
    let to_b = Scenario {
        name: "update A->B",
        slug: "update",
        baseline: baseline_a,
        push: Arc::clone(&bench.b),
        known: vec![Arc::clone(&bench.a), Arc::clone(&bench.b)],
        allowed: vec!["A", "B"],
        settles_on: "B",
    };
    let (_, baseline_b) = bench.dry_run(&slot, &to_b).await;
    let sc = Scenario {
        name: "rollback C->B",
        slug: "rollback",
        baseline: baseline_b,
        push: Arc::clone(&bench.c),
        known: vec![
            Arc::clone(&bench.a),
            Arc::clone(&bench.b),
            Arc::clone(&bench.c),
        ],
        allowed: vec!["B"],
        settles_on: "B",
    };
    let (w, _) = bench.dry_run(&slot, &sc).await;
    println!(
        "[{}] setup and dry run: {:.1} s, W = {w}",
        sc.name,
        t.elapsed().as_secs_f64()
    );
    (Arc::new(sc), w)
}

fn points(ns: &[u64], modes: &[bool]) -> Vec<(u64, bool)> {
    modes
        .iter()
        .flat_map(|&torn| ns.iter().map(move |&n| (n, torn)))
        .collect()
}

/// `UOTA_POWER_CUT_ONLY=66,155:torn,...`: run just these cut points (both
/// modes unless one is given), to look into one outcome.
fn only_points() -> Option<Vec<(u64, bool)>> {
    let spec = std::env::var("UOTA_POWER_CUT_ONLY").ok()?;
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (n, mode) = item.split_once(':').unwrap_or((item, ""));
        let n: u64 = n.parse().expect("UOTA_POWER_CUT_ONLY: N[:before|torn],...");
        match mode {
            "before" => out.push((n, false)),
            "torn" => out.push((n, true)),
            "" => out.extend([(n, false), (n, true)]),
            other => panic!("UOTA_POWER_CUT_ONLY: unknown mode {other:?}"),
        }
    }
    Some(out)
}

async fn strided_matrix(sc: &Arc<Scenario>, w: u64, bench: &Arc<Bench>) -> usize {
    // Cuts before the operation on the strided points; torn writes on a
    // sparser set of them.
    let before = strided(w, spread());
    let torn = strided(w, spread() / 4);
    let mut pts = points(&before, &[false]);
    pts.extend(points(&torn, &[true]));
    let pts = only_points().unwrap_or(pts);
    let t = Instant::now();
    let results = run_matrix(bench, sc, pts).await;
    report(sc, w, &results, t.elapsed())
}

async fn full_matrix(sc: &Arc<Scenario>, w: u64, bench: &Arc<Bench>) -> usize {
    let all: Vec<u64> = (1..=w).collect();
    let pts = only_points().unwrap_or_else(|| points(&all, &[false, true]));
    let t = Instant::now();
    let results = run_matrix(bench, sc, pts).await;
    report(sc, w, &results, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_during_an_update_leaves_a_or_b() {
    let bench = Arc::new(Bench::new());
    let (sc, w) = update_scenario(&bench).await;
    let bad = strided_matrix(&sc, w, &bench).await;
    assert_eq!(bad, 0, "power cuts left devices in a bad state (see above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_during_a_rollback_leaves_the_previous_release() {
    let bench = Arc::new(Bench::new());
    let (sc, w) = rollback_scenario(&bench).await;
    let bad = strided_matrix(&sc, w, &bench).await;
    assert_eq!(bad, 0, "power cuts left devices in a bad state (see above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix (minutes); run by benches/power_cut.sh"]
async fn full_matrix_update() {
    let bench = Arc::new(Bench::new());
    let (sc, w) = update_scenario(&bench).await;
    let bad = full_matrix(&sc, w, &bench).await;
    assert_eq!(bad, 0, "power cuts left devices in a bad state (see above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix (minutes); run by benches/power_cut.sh"]
async fn full_matrix_rollback() {
    let bench = Arc::new(Bench::new());
    let (sc, w) = rollback_scenario(&bench).await;
    let bad = full_matrix(&sc, w, &bench).await;
    assert_eq!(bad, 0, "power cuts left devices in a bad state (see above)");
}
