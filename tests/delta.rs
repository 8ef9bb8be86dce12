//! Delta pushes, compression and resume against virtual devices.

mod common;

use common::{start, CutRelay, Setup, TestDevice};
use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{Device, PushOptions, PushReport};
use uota::PushMode;

async fn push_with(t: &TestDevice, version: &str, opts: PushOptions) -> PushReport {
    let (_, bundle) = common::project_bundle(&t.project, opts.mode, version);
    let mut dev = t.connect().await;
    let report = dev
        .push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .expect("push");
    t.wait_version(version).await;
    report
}

async fn push(t: &TestDevice, version: &str) -> PushReport {
    push_with(t, version, PushOptions::default()).await
}

#[tokio::test]
async fn redeploy_sends_only_what_changed() {
    let t = start(Setup::default()).await;
    let first = push(&t, "1.0.0").await;
    assert_eq!(first.files_sent, first.files_total);
    assert!(first.compressed);
    assert!(
        first.payload_bytes < first.file_bytes,
        "python source deflates: {first:?}"
    );

    // Nothing changed: zero file bytes.
    let noop = push(&t, "1.0.1").await;
    assert_eq!(noop.files_sent, 0, "{noop:?}");
    assert_eq!(noop.file_bytes, 0);
    assert_eq!(noop.payload_bytes, 0);
    assert_eq!(noop.files_skipped, noop.files_total);

    // One file changed: only that one.
    let app = t.project.join("app/counter.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# 1.0.2\n")).unwrap();
    let one = push(&t, "1.0.2").await;
    assert_eq!(one.files_sent, 1, "{one:?}");
    assert_eq!(one.file_bytes, std::fs::metadata(&app).unwrap().len());
    let mut dev = t.connect().await;
    assert!(String::from_utf8(dev.get("app/counter.py").await.unwrap())
        .unwrap()
        .ends_with("# 1.0.2\n"));

    // A file that leaves the release leaves the device; /data stays.
    std::fs::write(t.project.join("app/extra.py"), "X = 1\n").unwrap();
    push(&t, "1.0.3").await;
    let mut dev = t.connect().await;
    assert!(dev.get("app/extra.py").await.is_ok());
    let state_before = dev.get("data/app_state.json").await.ok();
    std::fs::remove_file(t.project.join("app/extra.py")).unwrap();
    let rm = push(&t, "1.0.4").await;
    assert_eq!(rm.files_sent, 0, "{rm:?}");
    let mut dev = t.connect().await;
    assert!(
        dev.get("app/extra.py").await.is_err(),
        "removed file still on the device"
    );
    assert!(dev.ls("data").await.is_ok(), "/data survives");
    if state_before.is_some() {
        assert!(dev.get("data/app_state.json").await.is_ok());
    }
}

#[tokio::test]
async fn uncompressed_and_full_resend_on_request() {
    let t = start(Setup::default()).await;
    push(&t, "1.0.0").await;
    let all = push_with(
        &t,
        "1.0.1",
        PushOptions {
            delta: false,
            compress: false,
            ..PushOptions::default()
        },
    )
    .await;
    assert_eq!(all.files_sent, all.files_total);
    assert!(!all.compressed);
    assert_eq!(all.payload_bytes, all.file_bytes);
}

#[tokio::test]
async fn a_dropped_push_resumes_with_only_the_remainder() {
    let t = start(Setup::default()).await;
    push(&t, "1.0.0").await;
    // A big incompressible file, so the cut lands inside it.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..200_000)
        .map(|_| {
            // xorshift64: bytes deflate cannot shrink
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(t.project.join("app/blob.bin"), &big).unwrap();
    let project = Project::load(&t.project).unwrap();
    let mut m = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    m.version = "2.0.0".into();
    let total: u64 = m.files.iter().map(|f| f.size).sum();

    let relay = CutRelay::start(&t, 120_000).await;
    let mut via = Device::connect_tcp(&relay.host, relay.port, t.options())
        .await
        .unwrap();
    let err = via
        .push(&project.root, &m, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            uota::ErrorKind::Transport | uota::ErrorKind::Timeout
        ),
        "{err}"
    );
    drop(relay);
    let mut dev = t.connect().await;
    assert_eq!(
        dev.version().await.unwrap(),
        "1.0.0",
        "nothing committed by the cut push"
    );

    let report = dev
        .push(&project.root, &m, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(report.resumed, "{report:?}");
    assert!(
        report.file_bytes < big.len() as u64 && report.file_bytes < total,
        "resume sent {} of {} bytes",
        report.file_bytes,
        big.len()
    );
    let mut dev = t.wait_version("2.0.0").await;
    assert_eq!(dev.get("app/blob.bin").await.unwrap(), big);
}

/// A file that zlib's header and checksum would make bigger goes as it is,
/// in a push that compresses the rest.
#[tokio::test]
async fn tiny_files_go_uncompressed_when_that_is_smaller() {
    let t = start(Setup::default()).await;
    push(&t, "1.0.0").await;
    for i in 0..20 {
        std::fs::write(
            t.project.join(format!("app/t{i:02}.py")),
            format!("X={i}\n"),
        )
        .unwrap();
    }
    let report = push(&t, "1.0.1").await;
    assert_eq!(report.files_sent, 20, "{report:?}");
    assert!(report.compressed);
    assert_eq!(
        report.payload_bytes, report.file_bytes,
        "each tiny file goes raw: {report:?}"
    );
    let mut dev = t.connect().await;
    for i in 0..20 {
        let got = dev.get(&format!("app/t{i:02}.py")).await.unwrap();
        assert_eq!(got, format!("X={i}\n").into_bytes());
    }
}
