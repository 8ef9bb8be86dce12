//! Bad input gets a clear error, and the device keeps its last good release.

mod common;

use std::collections::BTreeMap;

use common::{start, RawClient, Setup, TestDevice};
use serde_json::json;
use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{ConnectOptions, PushOptions};
use uota::manifest::{FileEntry, Manifest};
use uota::ErrorKind;
use uota::PushMode;

/// Push the starter project as release 1.0.0 and return the device's files and their hashes.
async fn baseline(t: &TestDevice) -> BTreeMap<String, String> {
    let project = Project::load(&t.project).unwrap();
    let manifest = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    let mut dev = t.connect().await;
    let opts = PushOptions {
        signing_key: project.secrets.signing_key.clone(),
        ..PushOptions::default()
    };
    dev.push(&project.root, &manifest, &opts, &mut |_| {})
        .await
        .unwrap();
    t.wait_version(&manifest.version).await;
    snapshot(t).await
}

/// Hashes of the device's app files, read over the wire.
async fn snapshot(t: &TestDevice) -> BTreeMap<String, String> {
    // Staging, the previous release, config, app-owned /data and boot-guard
    // state change on their own.
    common::wire_snapshot(t, |path| {
        path.starts_with("ota_stage")
            || path.starts_with("ota_prev")
            || path.starts_with("config")
            || path.starts_with("data")
            || path == "ota_boot_state.json"
    })
    .await
}

async fn still_good(t: &TestDevice, before: &BTreeMap<String, String>) {
    let mut dev = t.connect().await;
    dev.ping().await.expect("device still answers ping");
    assert_eq!(dev.version().await.unwrap(), "1.0.0");
    let after = snapshot(t).await;
    assert_eq!(&after, before, "device files changed after a rejected push");
}

fn modified_manifest(t: &TestDevice, edit: impl FnOnce(&mut Manifest)) -> (Project, Manifest) {
    let project = Project::load(&t.project).unwrap();
    let mut m = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    m.version = "6.6.6".into();
    edit(&mut m);
    (project, m)
}

#[tokio::test]
async fn wrong_signature_is_refused_before_any_file() {
    let t = start(Setup {
        key: Some("right-key"),
        ..Setup::default()
    })
    .await;
    let before = baseline(&t).await;
    let (project, m) = modified_manifest(&t, |_| {});
    let mut dev = t.connect().await;
    let opts = PushOptions {
        signing_key: Some(uota::auth::SigningKey::new("wrong-key")),
        ..PushOptions::default()
    };
    let err = dev
        .push(&project.root, &m, &opts, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    // Unsigned is refused too.
    let mut dev = t.connect().await;
    let err = dev
        .push(&project.root, &m, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    still_good(&t, &before).await;
    assert!(t.dev.host().starts_with("127."));
}

#[tokio::test]
async fn corrupted_file_bytes_give_sha256_mismatch() {
    let t = start(Setup::default()).await;
    let before = baseline(&t).await;
    let (project, m) = modified_manifest(&t, |_| {});
    // Change a file after the manifest was hashed: the bytes no longer match.
    let victim = m
        .files
        .iter()
        .find(|f| f.path.starts_with("app/"))
        .unwrap()
        .path
        .clone();
    std::fs::write(project.root.join(&victim), b"corrupted = True\n").unwrap();
    let mut dev = t.connect().await;
    // Send every file (the device already has this release, so a delta would send none).
    let opts = PushOptions {
        delta: false,
        ..PushOptions::default()
    };
    let err = dev
        .push(&project.root, &m, &opts, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::HashMismatch | ErrorKind::Device),
        "{err}"
    );
    assert!(err.to_string().contains("mismatch"), "{err}");
    still_good(&t, &before).await;
}

#[tokio::test]
async fn traversal_and_absolute_paths_are_refused() {
    let t = start(Setup::default()).await;
    let before = baseline(&t).await;
    for bad in [
        "../evil.py",
        "/boot.py",
        "app/../../evil.py",
        "app//x.py",
        "data/x.py",
        "boot.py",
        "lib/uota/hal.py",
        "ota_stage/x",
    ] {
        let (project, m) = modified_manifest(&t, |m| {
            let data = b"print('evil')\n";
            std::fs::write(t.project.join("evil.bin"), data).unwrap();
            m.files.push(FileEntry {
                path: bad.to_string(),
                size: data.len() as u64,
                sha256: uota::auth::sha256(data),
            });
            m.files
                .sort_by(|a, b| format!("{}:", a.path).cmp(&format!("{}:", b.path)));
        });
        let _ = project;
        let mut dev = t.connect().await;
        let err = dev
            .push(&t.project, &m, &PushOptions::default(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidPath),
            "{bad}: expected a path error, got {err}"
        );
    }
    still_good(&t, &before).await;
}

#[tokio::test]
async fn dropped_connection_mid_file_keeps_the_old_release() {
    let t = start(Setup::default()).await;
    let before = baseline(&t).await;
    let (_, m) = modified_manifest(&t, |_| {});
    let mut c = RawClient::connect(&t, true).await;
    let r = c.begin(&m).await;
    assert_eq!(r["ok"], true, "{r}");
    let f = &m.files[0];
    c.req(json!({"op": "file", "path": f.path, "size": f.size, "sha256": f.sha256_hex()}))
        .await;
    let data = std::fs::read(t.project.join(&f.path)).unwrap();
    c.data(&data[..data.len() / 2]).await.unwrap();
    drop(c); // the link drops mid-file
    still_good(&t, &before).await;
    // A new push still works after the drop.
    let mut dev = t.connect().await;
    assert!(dev.ping().await.is_ok());
}

#[tokio::test]
async fn abort_mid_session_discards_the_stage() {
    let t = start(Setup::default()).await;
    let before = baseline(&t).await;
    let (_, m) = modified_manifest(&t, |_| {});
    let mut c = RawClient::connect(&t, true).await;
    let r = c.begin(&m).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = c.request(json!({"op": "abort"})).await;
    assert_eq!(r["ok"], true, "{r}");
    // Committing after the abort is refused: there is no session.
    let r = c.request(json!({"op": "commit", "reset": false})).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["err"], "no_session", "{r}");
    still_good(&t, &before).await;
}

#[tokio::test]
async fn unknown_commands_get_clear_errors() {
    let t = start(Setup::default()).await;
    let before = baseline(&t).await;
    // Line mode, as micro-ota answers.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("frobnicate now").await;
    assert_eq!(c.line().await, "unknown");
    c.send_line("ping").await;
    assert_eq!(c.line().await, "pong");
    // Frame mode.
    let mut c = RawClient::connect(&t, true).await;
    let r = c.request(json!({"op": "frobnicate"})).await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["err"], "unknown_op", "{r}");
    let r = c.request(json!({"op": "a".repeat(300)})).await;
    assert_eq!(r["err"], "unknown_op", "{r}");
    let r = c.request(json!({"no_op": 1})).await;
    assert_eq!(r["ok"], false, "{r}");
    // A frame of an unknown type is refused and the connection closed.
    let mut c = RawClient::connect(&t, true).await;
    c.send(&[0x7f, 0, 0, 0, 0]).await.unwrap();
    let r = c.response().await.expect("an error reply before the close");
    assert_eq!(r["err"], "bad_frame", "{r}");
    assert!(
        c.response().await.is_none(),
        "connection closed after a bad frame"
    );
    // An oversized frame is refused from its header.
    let mut c = RawClient::connect(&t, true).await;
    c.send(&[0x01, 0x7f, 0xff, 0xff, 0xff]).await.unwrap();
    let r = c.response().await.expect("an error reply before the close");
    assert_eq!(r["err"], "too_large", "{r}");
    still_good(&t, &before).await;
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let t = start(Setup {
        password: Some("right"),
        ..Setup::default()
    })
    .await;
    let before = baseline(&t).await;
    let err = t
        .connect_with(ConnectOptions {
            password: Some(uota::auth::Password::new("wrong")),
            ..ConnectOptions::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let err = t.connect_with(ConnectOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    // Without auth, frame requests other than ping are refused.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("uota 1").await;
    let hello = c.line().await;
    assert!(
        hello.contains("\"auth\":true") || hello.contains("\"auth\": true"),
        "{hello}"
    );
    c.enter_frames();
    let r = c.request(json!({"op": "get", "path": "main.py"})).await;
    assert_eq!(r["err"], "auth_required", "{r}");
    let r = c
        .request(json!({"op": "auth", "mac": "00".repeat(32)}))
        .await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    // Line mode: no plaintext password accepted unless legacy is enabled.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("right").await;
    assert_eq!(c.line().await, "denied");
    still_good(&t, &before).await;
}
