//! Deploy the starter project to real virtual devices (MicroPython unix port).

mod common;

use std::time::Duration;

use common::{sha256_hex, start, Setup, TestDevice};
use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{PushEvent, PushOptions};
use uota::PushMode;

async fn push(t: &TestDevice, mode: PushMode, version: &str) -> uota::device::PushReport {
    let (project, bundle) = common::project_bundle(&t.project, mode, version);
    let mut dev = t.connect().await;
    let opts = PushOptions {
        mode,
        signing_key: project.secrets.signing_key.clone(),
        ..PushOptions::default()
    };
    let mut events = Vec::new();
    let report = dev
        .push_bundle(&bundle, &opts, &mut |e| events.push(e.clone()))
        .await
        .expect("push succeeds");
    assert!(matches!(events.first(), Some(PushEvent::Started { .. })));
    // Committed, then (with a reset) the wait for the device to answer again.
    let committed = events
        .iter()
        .position(|e| matches!(e, PushEvent::Committed { .. }))
        .expect("a committed event");
    if opts.reset {
        assert_eq!(&events[committed + 1..], &[PushEvent::Restarting]);
        assert!(report.restart.is_some(), "{report:?}");
    } else {
        assert_eq!(committed, events.len() - 1);
    }
    assert!(events
        .iter()
        .any(|e| matches!(e, PushEvent::Progress { .. })));
    report
}

/// Every file of the manifest reads back with the same sha256.
async fn assert_files_match(t: &TestDevice, mode: PushMode) {
    let project = Project::load(&t.project).unwrap();
    let manifest = Bundle::for_project(&project, mode).unwrap().into_manifest();
    let mut dev = t.connect().await;
    for f in &manifest.files {
        if f.path == "config/ota.json" {
            continue; // the device keeps its own copy with runtime keys
        }
        let data = dev.get(&f.path).await.unwrap();
        assert_eq!(sha256_hex(&data), f.sha256_hex(), "{} differs", f.path);
    }
}

async fn app_state(t: &TestDevice) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut dev = t.connect().await;
        if let Ok(bytes) = dev.get("data/app_state.json").await {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never wrote /data/app_state.json; device log:\n{}",
            t.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn full_then_fast_push_runs_the_new_app() {
    let t = start(Setup::default()).await;
    let report = push(&t, PushMode::Full, "1.0.0").await;
    assert!(report.files_sent >= 3);
    t.wait_version("1.0.0").await;
    assert_files_match(&t, PushMode::Full).await;
    let state = app_state(&t).await;
    assert!(
        state.get("boots").is_some() || state.get("boot_count").is_some(),
        "{state}"
    );

    // Change the app and push the fast set.
    let app = t.project.join("app/counter.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# changed for 1.1.0\n")).unwrap();
    push(&t, PushMode::Fast, "1.1.0").await;
    let mut dev = t.wait_version("1.1.0").await;
    assert_files_match(&t, PushMode::Fast).await;
    let on_device = dev.get("app/counter.py").await.unwrap();
    assert!(String::from_utf8(on_device)
        .unwrap()
        .ends_with("# changed for 1.1.0\n"));
    // The runtime is untouched by app pushes.
    assert!(dev
        .ls("lib/uota")
        .await
        .unwrap()
        .iter()
        .any(|e| e.name == "hal.py"));
}

#[tokio::test]
async fn signed_push_to_a_device_with_a_key_and_password() {
    let t = start(Setup {
        password: Some("s3cret"),
        key: Some("fleet-signing-key"),
        ..Setup::default()
    })
    .await;
    push(&t, PushMode::Full, "2.0.0").await;
    t.wait_version("2.0.0").await;
    assert_files_match(&t, PushMode::Full).await;
}

#[tokio::test]
async fn push_to_a_littlefs_image_device() {
    let t = start(Setup {
        image: true,
        ..Setup::default()
    })
    .await;
    push(&t, PushMode::Full, "3.0.0").await;
    t.wait_version("3.0.0").await;
    assert_files_match(&t, PushMode::Full).await;
}

/// One bundle pushed to two devices is compressed once: the second push
/// takes every chunk from the bundle's cache, and installs the same files.
#[tokio::test]
async fn a_bundle_pushed_twice_is_compressed_once() {
    let a = start(Setup::default()).await;
    let b = start(Setup::default()).await;
    // A file large enough for several chunks, compressible.
    let big: String = (0..6000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(a.project.join("app/big.txt"), &big).unwrap();
    let (_, bundle) = common::project_bundle(&a.project, PushMode::Full, "1.0.0");
    let opts = PushOptions::default();
    let first = a
        .connect()
        .await
        .push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .unwrap();
    assert!(
        first.compressed && first.payload_bytes < first.file_bytes,
        "{first:?}"
    );
    let (chunks, bytes) = bundle.deflate_cache().stats();
    assert!(chunks > 3 && bytes > 0, "{chunks} chunks, {bytes} bytes");
    let second = b
        .connect()
        .await
        .push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        bundle.deflate_cache().stats(),
        (chunks, bytes),
        "nothing compressed again"
    );
    assert_eq!(second.payload_bytes, first.payload_bytes);
    let mut dev = b.connect().await;
    assert_eq!(dev.get("app/big.txt").await.unwrap(), big.as_bytes());
}
