//! What a release may write (docs/protocol.md section 5), against virtual
//! devices: nothing under a protected path (every ancestor of a path is
//! checked, case-insensitively), nothing that shadows a module the runtime
//! imports, nothing outside the app area; the same through micro-ota's
//! legacy sessions, which also obey `maxFiles` and the free flash before
//! staging anything; the guarded config keys change only with a runtime
//! release; the secrets file's siblings are as secret as the file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{start, RawClient, Setup, TestDevice};
use serde_json::json;
use uota::auth::SigningKey;
use uota::bundle::Bundle;
use uota::compat::Compat;
use uota::config::Project;
use uota::device::PushOptions;
use uota::manifest::{FileEntry, Manifest};
use uota::release::ReleaseClaims;
use uota::PushMode;

const KEY: &str = "release-paths-key";

/// The runtime's protected files: a release may not write them, nor put
/// anything under them (which would turn the file into a folder).
const PROTECTED_FILES: [&str; 8] = [
    "config/.ota.secrets.json",
    "boot.py",
    "ota_serial_session",
    "ota_boot_state.json",
    "ota_floor.json",
    "ota_manifest.txt",
    "ota_version.json",
    "ota_settings.json",
];

/// Every path a release may not write: each protected file itself, nested
/// under it (one and two levels, in other cases, under its temporary
/// sibling), the protected folders, the secrets file's siblings, every way to
/// shadow a runtime module, and paths outside the default app area. With
/// `runtime`, `boot.py` itself and `lib/uota/…` are allowed, nothing else.
fn refused_paths(runtime: bool) -> Vec<String> {
    let mut v = Vec::new();
    for x in PROTECTED_FILES {
        if !(runtime && x == "boot.py") {
            v.push(x.to_string());
        }
        v.push(format!("{x}/x"));
        v.push(format!("{x}/a/b"));
        v.push(format!("{}/x", x.to_uppercase()));
        v.push(format!("{x}.tmp"));
        v.push(format!("{x}.tmp/x"));
    }
    v.push("Boot.Py/main.py".into());
    v.push("Ota_Floor.Json/x".into());
    if !runtime {
        v.extend(["lib/uota/hal.py", "LIB/UOTA/x.py", "lib/uota/sub/x.py"].map(String::from));
    }
    for p in [
        // Folders that are never replaced, and the runtime's own areas.
        "lib/uota",
        "lib",
        "config",
        "Config",
        "data",
        "data/x.txt",
        "DATA/x.txt",
        "ota_stage/x.py",
        "ota_stage",
        "ota_prev/main.py",
        "ota_prev.main.py",
        "ota_prev_settings.json",
        ".ready",
        ".uota_session",
        // Siblings of the secrets file.
        "config/.ota.secrets.json.bak",
        "config/.ota.secrets.jsonx",
        "CONFIG/.OTA.SECRETS.JSON.TMP",
        // Shadowing the runtime and the modules it imports.
        "uota/__init__.py",
        "uota/server.py",
        "uota.py",
        "uota.mpy",
        "UOTA.PY",
        "lib/uota.py",
        "lib/uota.mpy",
        "hashlib.py",
        "json.mpy",
        "lib/json.py",
        "lib/os/__init__.py",
        "asyncio/__init__.py",
        "asyncio/core.py",
        "lib/asyncio.py",
        "Binascii.py",
        "time.py",
        "socket.py",
        "select.mpy",
        "_thread.py",
        "struct.py",
        "errno.py",
        "random.py",
        "re.py",
        "zlib.py",
        "io.py",
        // Outside the app area.
        "README.md",
        "notes/x.txt",
        "config/other.json",
        "app",
        "tests/test_app.py",
        "ota_extra.json",
        "sub/main.py",
    ] {
        v.push(p.to_string());
    }
    let mut seen = BTreeSet::new();
    v.retain(|p| seen.insert(p.clone()));
    v
}

// ---------------------------------------------------------------------------
// Helpers.

/// Push the starter project (with `edit` applied to its config) and wait
/// until the device runs it.
async fn push_project(
    t: &TestDevice,
    version: &str,
    runtime: bool,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let cfg_path = t.project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // The README is outside the app area: it is not part of a release.
    let _ = std::fs::remove_file(t.project.join("README.md"));
    let (project, bundle) = common::project_bundle(&t.project, PushMode::Full, version);
    let opts = PushOptions {
        signing_key: project.secrets.signing_key.clone(),
        runtime,
        ..PushOptions::default()
    };
    let mut dev = t.connect().await;
    dev.push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("push {version}: {e}\n{}", t.log()));
    drop(dev);
    t.wait_version(version).await;
}

/// Every file and folder of the device's filesystem (a host folder), except
/// what changes by itself: staging, the previous release, the boot state,
/// the app's data.
fn disk_snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let top = rel.split('/').next().unwrap();
            if top == "ota_stage"
                || top.starts_with("ota_prev")
                || top.starts_with("ota_boot_state.json")
                || top == "data"
            {
                continue;
            }
            if p.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, common::sha256_hex(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The device answers ping, runs `version`, and its files are `before`.
async fn unchanged(t: &TestDevice, version: &str, before: &BTreeMap<String, String>) {
    let mut dev = t.connect().await;
    dev.ping().await.expect("the device still answers ping");
    assert_eq!(dev.version().await.unwrap(), version);
    let after = disk_snapshot(&t.root);
    let diff: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| format!("added or changed {k}"))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("removed {k}")),
        )
        .collect();
    assert!(diff.is_empty(), "files changed: {diff:#?}");
}

fn boots(t: &TestDevice) -> usize {
    t.log().matches("[uota] I uota runtime").count()
}

/// Wait until the device has booted again (more boots than `before`) and answers.
async fn rebooted(t: &TestDevice, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while boots(t) <= before {
        assert!(
            Instant::now() < deadline,
            "the device did not reboot\n{}",
            t.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.connect().await.ping().await.unwrap();
}

/// A uota `begin` of a release with one file at `path` (signed with `key`
/// when given); an accepted one is aborted again.
async fn begin_one(
    t: &TestDevice,
    key: Option<&SigningKey>,
    path: &str,
    runtime: bool,
) -> serde_json::Value {
    let m = Manifest::new("6.6.6", vec![FileEntry::from_bytes(path, b"evil = 1\n")]).unwrap();
    let mut c = RawClient::connect(t, true).await;
    let mut begin = json!({
        "op": "begin", "version": m.version, "mode": "full",
        "count": 1, "runtime": runtime,
    });
    if let Some(key) = key {
        let h = c.hello.clone().unwrap();
        let claims = ReleaseClaims {
            release: h.release + 1,
            rollback: false,
            mode: PushMode::Full,
            runtime,
            nonce: h.nonce.clone(),
            device: h.id.clone(),
            compat: Compat::default(),
        };
        begin["sig"] = claims.sign(&m, key).unwrap().into();
        begin["release"] = claims.release.into();
        begin["device"] = claims.device.clone().into();
    }
    let r = c.begin_stream(begin, &m.manifest_lines()).await;
    if r["ok"] == true {
        assert_eq!(c.request(json!({"op": "abort"})).await["ok"], true);
    }
    r
}

/// micro-ota's OTAS container: magic, version, count, per file path, size,
/// raw SHA-256 and data, then the HMAC-SHA256 of everything after the magic
/// (32 zero bytes without a key).
fn otas(version: &str, files: &[(String, Vec<u8>)], key: Option<&str>) -> Vec<u8> {
    otas_raw(
        version,
        files.len() as u16,
        &files
            .iter()
            .map(|(p, d)| {
                let sha: [u8; 32] = FileEntry::from_bytes(p.clone(), d).sha256;
                (p.clone(), d.len() as u32, sha, d.clone())
            })
            .collect::<Vec<_>>(),
        key,
    )
}

fn otas_raw(
    version: &str,
    count: u16,
    files: &[(String, u32, [u8; 32], Vec<u8>)],
    key: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(version.len() as u16).to_be_bytes());
    body.extend_from_slice(version.as_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    for (path, size, sha, data) in files {
        body.extend_from_slice(&(path.len() as u16).to_be_bytes());
        body.extend_from_slice(path.as_bytes());
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(sha);
        body.extend_from_slice(data);
    }
    let mut out = b"OTAS".to_vec();
    out.extend_from_slice(&body);
    match key {
        Some(k) => out.extend_from_slice(&uota::auth::hmac_sha256(k.as_bytes(), &body)),
        None => out.extend_from_slice(&[0; 32]),
    }
    out
}

/// A complete `stream_ota` session; returns the device's last reply line.
async fn stream_ota(t: &TestDevice, container: &[u8]) -> String {
    let mut c = RawClient::connect(t, false).await;
    c.send_line(&format!("stream_ota {}", container.len()))
        .await;
    let ready = c.line().await;
    assert_eq!(ready, "ready", "stream_ota");
    c.send(container).await.unwrap();
    c.line().await
}

/// A complete `start_ota` session (manifest, every file, `end_ota`);
/// returns the reply to `end_ota`.
async fn start_ota(t: &TestDevice, m: &Manifest, files: &[(String, Vec<u8>)]) -> String {
    let mut c = RawClient::connect(t, false).await;
    c.send_line("start_ota").await;
    assert_eq!(c.line().await, "ready", "start_ota");
    let doc = m.to_json();
    c.send_line(&format!("manifest {}", doc.len())).await;
    c.send(doc.as_bytes()).await.unwrap();
    assert_eq!(c.line().await, "ok", "manifest");
    for (path, data) in files {
        let e = FileEntry::from_bytes(path.clone(), data);
        c.send_line(&format!("file {path};{};{}", e.size, e.sha256_hex()))
            .await;
        c.send(data).await.unwrap();
        assert_eq!(c.line().await, "ok", "file {path}");
    }
    c.send_line("end_ota").await;
    c.line().await
}

// ---------------------------------------------------------------------------
// The app area, nesting and shadowing through uota pushes.

#[tokio::test]
async fn a_push_cannot_write_under_protected_paths_shadow_the_runtime_or_leave_the_app_area() {
    for key in [None, Some(KEY)] {
        let t = start(Setup {
            key,
            ..Setup::default()
        })
        .await;
        let key = key.map(SigningKey::new);
        push_project(&t, "1.0.0", false, |_| {}).await;
        let before = disk_snapshot(&t.root);
        for runtime in [false, true] {
            // An allowed path gets through the same begin (the refusals
            // below are the paths').
            for ok in ["app/fine.py", "lib/vendor/mod.py", "www/index.html"] {
                let r = begin_one(&t, key.as_ref(), ok, runtime).await;
                assert_eq!(r["ok"], true, "{ok} (runtime {runtime}): {r}");
            }
            if runtime {
                for ok in ["boot.py", "lib/uota/extra.py"] {
                    let r = begin_one(&t, key.as_ref(), ok, true).await;
                    assert_eq!(r["ok"], true, "{ok} (runtime): {r}");
                }
            }
            for path in refused_paths(runtime) {
                let r = begin_one(&t, key.as_ref(), &path, runtime).await;
                assert_eq!(
                    r["err"],
                    "protected",
                    "{path} (signed {}, runtime {runtime}): {r}",
                    key.is_some()
                );
                assert_eq!(r["msg"], path.as_str(), "{r}");
            }
        }
        unchanged(&t, "1.0.0", &before).await;
    }
}

// ---------------------------------------------------------------------------
// The same through micro-ota's legacy sessions: such files are received and
// skipped, never written.

#[tokio::test]
async fn legacy_sessions_skip_protected_nested_shadowing_and_out_of_area_paths() {
    for key in [None, Some(KEY)] {
        let t = start(Setup {
            legacy: true,
            key,
            ..Setup::default()
        })
        .await;
        push_project(&t, "1.0.0", false, |_| {}).await;
        let before = disk_snapshot(&t.root);
        let files: Vec<(String, Vec<u8>)> = refused_paths(false)
            .into_iter()
            .map(|p| (p, b"evil = 1\n".to_vec()))
            .collect();
        // The same version: a session whose every file is skipped leaves
        // the device exactly as it was.
        let boots_before = boots(&t);
        let reply = stream_ota(&t, &otas("1.0.0", &files, key)).await;
        assert_eq!(reply, "ok", "stream_ota (signed {})", key.is_some());
        rebooted(&t, boots_before).await;
        unchanged(&t, "1.0.0", &before).await;

        let mut m = Manifest::new(
            "1.0.0",
            files
                .iter()
                .map(|(p, d)| FileEntry::from_bytes(p.clone(), d))
                .collect(),
        )
        .unwrap();
        if let Some(k) = key {
            m.sign(&SigningKey::new(k));
        }
        let boots_before = boots(&t);
        let reply = start_ota(&t, &m, &files).await;
        assert_eq!(reply, "ok", "start_ota (signed {})", key.is_some());
        rebooted(&t, boots_before).await;
        unchanged(&t, "1.0.0", &before).await;

        // Files in the app area still get through (so the skipping above is
        // the paths'), also when they do not come in manifest order.
        let ok = vec![
            ("app/zz_ok.py".to_string(), b"zz = 1\n".to_vec()),
            ("app/legacy_ok.py".to_string(), b"ok = 1\n".to_vec()),
        ];
        let boots_before = boots(&t);
        assert_eq!(stream_ota(&t, &otas("1.0.1", &ok, key)).await, "ok");
        rebooted(&t, boots_before).await;
        for (path, data) in &ok {
            assert_eq!(&std::fs::read(t.root.join(path)).unwrap(), data, "{path}");
        }
    }
}

// ---------------------------------------------------------------------------
// Legacy sessions: maxFiles and the free flash, before anything is staged.

#[tokio::test]
async fn legacy_sessions_obey_max_files_and_the_free_flash_before_staging() {
    let t = start(Setup {
        legacy: true,
        image: true, // a board-sized filesystem: 1.4 MB
        ..Setup::default()
    })
    .await;
    push_project(&t, "1.0.0", false, |_| {}).await;
    let before = common::wire_snapshot(&t, |p| {
        p.starts_with("ota_stage")
            || p.starts_with("ota_prev")
            || p.starts_with("data")
            || p.starts_with("ota_boot_state.json")
            || p == "config/.ota.secrets.json"
    })
    .await;
    let check = |what: &str, reply: &str, code: &str| {
        assert!(
            reply.starts_with("error") && reply.contains(code),
            "{what}: {reply:?}"
        );
    };

    // stream_ota announcing 11065 files (more than maxFiles, 1000): refused
    // on the count, before a single entry is sent.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("stream_ota 100").await;
    assert_eq!(c.line().await, "ready");
    let mut head = b"OTAS".to_vec();
    head.extend_from_slice(&1u16.to_be_bytes());
    head.extend_from_slice(b"9");
    head.extend_from_slice(&11065u16.to_be_bytes());
    c.send(&head).await.unwrap();
    check("stream_ota count", &c.line().await, "too_large");

    // start_ota with 1001 entries: refused on the manifest.
    let entries: Vec<String> = (0..1001).map(|i| format!("\"a/{i}\":{{}}")).collect();
    let doc = format!("{{\"version\":\"9\",\"files\":{{{}}}}}", entries.join(","));
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("start_ota").await;
    assert_eq!(c.line().await, "ready");
    c.send_line(&format!("manifest {}", doc.len())).await;
    c.send(doc.as_bytes()).await.unwrap();
    check("start_ota count", &c.line().await, "too_large");

    // start_ota with 8000 tiny entries in 64 KB of JSON: refused before it is
    // parsed (json would build all of them in RAM first).
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let keys: Vec<String> = (0..8000)
        .map(|i| {
            let n = alphabet.len();
            format!(
                "\"{}{}{}\":0",
                alphabet[i % n],
                alphabet[(i / n) % n],
                alphabet[i / (n * n)]
            )
        })
        .collect();
    let doc = format!("{{\"files\":{{{}}}}}", keys.join(","));
    assert!(doc.len() <= 65536, "{}", doc.len());
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("start_ota").await;
    assert_eq!(c.line().await, "ready");
    c.send_line(&format!("manifest {}", doc.len())).await;
    c.send(doc.as_bytes()).await.unwrap();
    check("start_ota entries", &c.line().await, "too_large");

    // stream_ota with a file bigger than the free flash: refused once its
    // size is known, before any of its bytes is sent or staged.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("stream_ota 100").await;
    assert_eq!(c.line().await, "ready");
    let big = otas_raw(
        "9",
        1,
        &[("app/big.bin".into(), 4_000_000, [7; 32], Vec::new())],
        None,
    );
    c.send(&big[..big.len() - 32]).await.unwrap();
    check("stream_ota size", &c.line().await, "no_space");

    // start_ota whose manifest needs more than the free flash.
    let m = Manifest::new(
        "9",
        vec![FileEntry {
            path: "app/big.bin".into(),
            size: 4_000_000,
            sha256: [7; 32],
        }],
    )
    .unwrap();
    let doc = m.to_json();
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("start_ota").await;
    assert_eq!(c.line().await, "ready");
    c.send_line(&format!("manifest {}", doc.len())).await;
    c.send(doc.as_bytes()).await.unwrap();
    check("start_ota size", &c.line().await, "no_space");

    let mut dev = t.connect().await;
    dev.ping().await.unwrap();
    assert_eq!(dev.version().await.unwrap(), "1.0.0");
    drop(dev);
    let after = common::wire_snapshot(&t, |p| {
        p.starts_with("ota_stage")
            || p.starts_with("ota_prev")
            || p.starts_with("data")
            || p.starts_with("ota_boot_state.json")
            || p == "config/.ota.secrets.json"
    })
    .await;
    assert_eq!(after, before, "files changed");
    // Nothing was left in the staging area either.
    let mut dev = t.connect().await;
    let top: Vec<String> = dev
        .ls("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!top.contains(&"ota_stage".to_string()), "{top:?}");
}

#[tokio::test]
async fn a_legacy_session_of_max_files_files_fits_a_board_sized_heap() {
    // A small heap (320 KB on the 64-bit unix port, where objects are twice
    // their size on a board, and the runtime runs from .py sources), and a
    // signed device, so that a session with a wrong trailer is received to
    // its end and then refused. The session is the device's first, before
    // a push has loaded more of the runtime.
    let t = start(Setup {
        legacy: true,
        key: Some(KEY),
        heap_size: Some("320k"),
        ..Setup::default()
    })
    .await;
    let version = t.connect().await.version().await.unwrap();
    let before = disk_snapshot(&t.root);
    // maxFiles (1000) empty files with long names, in manifest order.
    let files: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            (
                format!("app/generated/module_{i:04}_{}.py", "x".repeat(40)),
                Vec::new(),
            )
        })
        .collect();
    let mut container = otas("9.9.9", &files, Some(KEY));
    let n = container.len();
    container[n - 1] ^= 1; // a wrong trailer
    let reply = stream_ota(&t, &container).await;
    assert_eq!(reply, "sig_mismatch", "{}", t.log());
    // The same files, correctly signed but not in manifest order: sorting
    // them needs RAM the board does not have, so the session is refused
    // instead of failing half-way.
    let mut reversed = files.clone();
    reversed.reverse();
    let reply = stream_ota(&t, &otas("9.9.9", &reversed, Some(KEY))).await;
    assert!(
        reply.starts_with("error: too_large"),
        "{reply}\n{}",
        t.log()
    );
    assert!(!t.log().contains("MemoryError"), "{}", t.log());
    unchanged(&t, &version, &before).await;
}

// ---------------------------------------------------------------------------
// Guarded config keys.

async fn hello_legacy(t: &TestDevice) -> bool {
    let c = RawClient::connect(t, true).await;
    c.hello.unwrap().legacy
}

async fn confirmed(t: &TestDevice, version: &str) {
    t.wait_info(&format!("{version} confirmed"), |i| {
        i["version"] == version && i["release"]["state"] == "confirmed"
    })
    .await;
}

/// The test project's config: confirm a release that survives a second.
fn quick_confirm(c: &mut serde_json::Value) {
    c["confirmAfter"] = 1.into();
    c["watchdog"] = 5.into();
}

#[tokio::test]
async fn guarded_config_keys_change_only_with_runtime_releases_and_roll_back_with_them() {
    // Provisioned before the first boot: legacy mode on, at most 5 files
    // (the starter project has 5).
    let t = start(Setup {
        device_config: vec![("legacy", true.into()), ("maxFiles", 5.into())],
        ..Setup::default()
    })
    .await;
    assert!(
        hello_legacy(&t).await,
        "the provisioned config is not in force"
    );
    let six: Vec<FileEntry> = (0..6)
        .map(|i| FileEntry::from_bytes(format!("app/m{i}.py"), b"x = 1\n"))
        .collect();
    let r = RawClient::connect(&t, true)
        .await
        .begin(&Manifest::new("9", six).unwrap())
        .await;
    assert_eq!(r["err"], "too_large", "{r}");

    // A release without the runtime flag installs its config/ota.json, but
    // its guarded keys do not take effect: it cannot turn legacy mode off...
    push_project(&t, "2.0.0", false, |c| {
        quick_confirm(c);
        c["legacy"] = false.into();
    })
    .await;
    let installed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.root.join("config/ota.json")).unwrap()).unwrap();
    assert_eq!(installed["legacy"], false, "the config was installed");
    assert!(
        hello_legacy(&t).await,
        "a non-runtime release disabled legacy"
    );
    // ... a runtime release can ...
    push_project(&t, "3.0.0", true, quick_confirm).await;
    assert!(
        !hello_legacy(&t).await,
        "a runtime release did not disable legacy"
    );
    confirmed(&t, "3.0.0").await;
    // ... and a release without the flag cannot turn it on again.
    push_project(&t, "4.0.0", false, |c| c["legacy"] = true.into()).await;
    assert!(
        !hello_legacy(&t).await,
        "a non-runtime release enabled legacy"
    );
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("stream_ota 10").await;
    assert!(c.line().await.starts_with("error"), "legacy sessions open");
    confirmed(&t, "4.0.0").await;

    // A runtime release that enables legacy mode and whose app crashes:
    // rolled back, its guarded keys go with it.
    std::fs::write(
        t.project.join("main.py"),
        "async def run():\n    raise ValueError('broken release')\n",
    )
    .unwrap();
    let project = Project::load(&t.project).unwrap();
    let mut m = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    m.version = "5.0.0".into();
    let opts = PushOptions {
        runtime: true,
        ..PushOptions::default()
    };
    // The push waits for the device to come back, and says it came back
    // on the previous release.
    let err = t
        .connect()
        .await
        .push(&project.root, &m, &opts, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, uota::Error::ReleaseRefused { reason, .. } if reason == "rolled_back"),
        "{err}"
    );
    let info = t
        .wait_info("rollback to 4.0.0", |i| {
            i["version"] == "4.0.0" && !i["release"]["last_rollback"].is_null()
        })
        .await;
    assert_eq!(info["release"]["last_rollback"]["from"], "5.0.0", "{info}");
    assert!(
        !hello_legacy(&t).await,
        "the failed release's guarded keys outlived it"
    );
}

// ---------------------------------------------------------------------------
// The secrets file's siblings.

#[tokio::test]
async fn the_secrets_files_siblings_are_unreadable_and_boot_removes_or_completes_them() {
    let t = start(Setup::default()).await;
    push_project(&t, "1.0.0", false, |_| {}).await;
    let secrets = t.root.join("config/.ota.secrets.json");
    let original = std::fs::read(&secrets).unwrap();
    // What a power cut inside passwd or rekey leaves (and look-alikes).
    let leaked = br#"{"otaPassword": "", "signingKey": "leaked-key"}"#;
    let siblings = [
        "config/.ota.secrets.json.tmp",
        "config/.ota.secrets.json.bak",
        "config/.OTA.SECRETS.JSON.TMP",
    ];
    for s in siblings {
        std::fs::write(t.root.join(s), leaked).unwrap();
    }
    let mut dev = t.connect().await;
    for s in siblings {
        for p in [s.to_string(), format!("/{s}")] {
            let err = dev.get(&p).await.unwrap_err();
            assert!(err.to_string().contains("protected"), "get {p}: {err}");
            let err = dev.rm(&p).await.unwrap_err();
            assert!(err.to_string().contains("protected"), "rm {p}: {err}");
        }
        assert!(t.root.join(s).is_file(), "{s} removed by rm");
    }
    // Boot removes them: the secrets file itself is there.
    let n = boots(&t);
    dev.reset().await.unwrap();
    drop(dev);
    rebooted(&t, n).await;
    for s in siblings {
        assert!(!t.root.join(s).exists(), "{s} survived the reboot");
    }
    assert_eq!(std::fs::read(&secrets).unwrap(), original);
    // A cut between removing the old file and renaming the new one (FAT):
    // boot completes the write.
    let new = br#"{"otaPassword": "", "signingKey": ""}"#;
    std::fs::remove_file(&secrets).unwrap();
    std::fs::write(t.root.join("config/.ota.secrets.json.tmp"), new).unwrap();
    let n = boots(&t);
    t.connect().await.reset().await.unwrap();
    rebooted(&t, n).await;
    assert!(!t.root.join("config/.ota.secrets.json.tmp").exists());
    assert_eq!(std::fs::read(&secrets).unwrap(), new);
}

// ---------------------------------------------------------------------------
// The list of modules a release may not shadow stays complete.

/// The top-level module names of every `import X` and `from X import` in a
/// Python source (relative imports left out).
fn imported_modules(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines() {
        let l = line.trim_start();
        if let Some(rest) = l.strip_prefix("import ") {
            for part in rest.split('#').next().unwrap().split(',') {
                let name = part.split_whitespace().next().unwrap_or("");
                let top = name.split('.').next().unwrap_or("");
                if !top.is_empty() {
                    out.insert(top.to_string());
                }
            }
        } else if let Some(rest) = l.strip_prefix("from ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            if rest.contains(" import") && !name.starts_with('.') {
                out.insert(name.split('.').next().unwrap().to_string());
            }
        }
    }
    out
}

fn python_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            python_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "py") {
            out.push(p);
        }
    }
}

/// The names in paths.py's RUNTIME_MODULES tuple.
fn guarded_modules() -> BTreeSet<String> {
    let text = std::fs::read_to_string(common::repo().join("device/lib/uota/paths.py")).unwrap();
    let start = text
        .find("RUNTIME_MODULES = (")
        .expect("RUNTIME_MODULES in paths.py");
    let body = &text[start..];
    let body = &body[body.find('(').unwrap() + 1..body.find(')').unwrap()];
    body.split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_module_the_runtime_imports_is_guarded_against_shadowing() {
    let guarded = guarded_modules();
    assert!(
        guarded.contains("uota") && guarded.contains("json"),
        "{guarded:?}"
    );
    let mut files = Vec::new();
    python_files(&common::repo().join("device"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    // The virtual device's shim imports its own modules (device/sim/) from
    // the host before the device filesystem is mounted: nothing on the
    // device can shadow them, and they are not installed on devices.
    let shim_own: BTreeSet<String> = files
        .iter()
        .filter(|f| f.starts_with(common::repo().join("device/sim")))
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut missing = BTreeMap::new();
    for f in &files {
        for m in imported_modules(&std::fs::read_to_string(f).unwrap()) {
            if !guarded.contains(&m) && !shim_own.contains(&m) {
                missing.entry(m).or_insert_with(Vec::new).push(
                    f.strip_prefix(common::repo())
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules imported under device/ but missing from RUNTIME_MODULES in \
         device/lib/uota/paths.py: {missing:#?}"
    );
    // The parser finds what it should.
    let found = imported_modules("import os, sys\nfrom uota.release import (\n    x,\n)\n    import io as _io\nfrom . import y\n");
    assert_eq!(
        found,
        ["io", "os", "sys", "uota"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
