//! micro-ota compatibility: a uota host speaks micro-ota's protocol, and a uota
//! device answers micro-ota's line commands (and its push sessions when enabled).

mod common;

use common::{sha256_hex, start, RawClient, Setup, TestDevice};
use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{ConnectOptions, MicroOtaMethod, Peer, ProtocolChoice, PushOptions};
use uota::ErrorKind;
use uota::PushMode;

fn legacy_opts(t: &TestDevice) -> ConnectOptions {
    ConnectOptions {
        protocol: ProtocolChoice::MicroOta,
        ..t.options()
    }
}

async fn legacy_push(t: &TestDevice, method: MicroOtaMethod, version: &str) {
    let (project, bundle) = common::project_bundle(&t.project, PushMode::Full, version);
    let mut dev = t.connect_with(legacy_opts(t)).await.unwrap();
    assert_eq!(dev.peer(), &Peer::MicroOta);
    let opts = PushOptions {
        micro_ota_method: method,
        signing_key: project.secrets.signing_key.clone(),
        ..PushOptions::default()
    };
    dev.push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .expect("legacy push");
    assert_installed(t, &bundle, version).await;
}

/// The device runs `version` and holds the bundle's files, byte for byte
/// (its config/ota.json aside: a push to micro-ota rewrites it).
async fn assert_installed(t: &TestDevice, bundle: &Bundle, version: &str) {
    let mut dev = t.wait_version(version).await;
    for f in bundle
        .manifest()
        .files
        .iter()
        .filter(|f| f.path != "config/ota.json")
    {
        assert_eq!(
            sha256_hex(&dev.get(&f.path).await.unwrap()),
            f.sha256_hex(),
            "{}",
            f.path
        );
    }
}

#[tokio::test]
async fn stream_ota_session_with_password_and_key() {
    let t = start(Setup {
        legacy: true,
        password: Some("pw"),
        key: Some("k3y"),
        ..Setup::default()
    })
    .await;
    legacy_push(&t, MicroOtaMethod::Stream, "1.0.0").await;
}

#[tokio::test]
async fn start_ota_session_with_signed_manifest() {
    let t = start(Setup {
        legacy: true,
        key: Some("k3y"),
        ..Setup::default()
    })
    .await;
    legacy_push(&t, MicroOtaMethod::Session, "1.0.1").await;
}

#[tokio::test]
async fn legacy_stream_with_wrong_key_changes_nothing() {
    let t = start(Setup {
        legacy: true,
        key: Some("right"),
        ..Setup::default()
    })
    .await;
    legacy_push(&t, MicroOtaMethod::Stream, "1.0.0").await;
    let project = Project::load(&t.project).unwrap();
    let mut m = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    m.version = "9.9.9".into();
    let mut dev = t.connect_with(legacy_opts(&t)).await.unwrap();
    let opts = PushOptions {
        signing_key: Some(uota::auth::SigningKey::new("wrong")),
        ..PushOptions::default()
    };
    let err = dev
        .push(&project.root, &m, &opts, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    let mut dev = t.connect().await;
    assert_eq!(dev.version().await.unwrap(), "1.0.0");
}

#[tokio::test]
async fn line_commands_answer_like_micro_ota() {
    let t = start(Setup::default()).await;
    let mut dev = t.connect_with(legacy_opts(&t)).await.unwrap();
    dev.ping().await.unwrap();
    assert!(!dev.version().await.unwrap().is_empty());
    let names: Vec<_> = dev
        .ls("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"lib".to_string()), "{names:?}");
    let boot = dev.get("boot.py").await.unwrap();
    assert!(!boot.is_empty());
    // Secrets are never readable.
    let err = dev.get("config/.ota.secrets.json").await.unwrap_err();
    assert!(
        err.to_string().contains("error") || err.kind() == ErrorKind::Device,
        "{err}"
    );
    // Legacy pushes are refused unless enabled.
    let mut c = RawClient::connect(&t, false).await;
    c.send_line("stream_ota 10").await;
    assert!(
        c.line().await.starts_with("error"),
        "legacy push accepted without legacy mode"
    );
}

/// Rewrite the test project's `config/ota.json` with `edit`.
fn edit_project_config(t: &TestDevice, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = t.project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

/// micro-ota's own CLI pushes `config/ota.json` with `signingKey` set to the
/// key and `otaPassword` to the SHA-256 of the password; uota does the same
/// for a micro-ota peer, so the device keeps its auth after the push.
#[tokio::test]
async fn a_micro_ota_push_keeps_the_devices_password_and_key() {
    let t = start(Setup {
        legacy: true,
        password: Some("pw"),
        key: Some("k3y"),
        ..Setup::default()
    })
    .await;
    legacy_push(&t, MicroOtaMethod::Stream, "1.0.0").await;
    // What the device holds: the project's config with the key and the
    // password's SHA-256, every other key as in the project.
    let pushed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.root.join("config/ota.json")).unwrap()).unwrap();
    let project: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.project.join("config/ota.json")).unwrap()).unwrap();
    assert_eq!(pushed["signingKey"], "k3y", "{pushed}");
    assert_eq!(pushed["otaPassword"], sha256_hex(b"pw"), "{pushed}");
    for (k, v) in project.as_object().unwrap() {
        assert_eq!(&pushed[k], v, "{k}");
    }
    // The right password still gets in and pushes ...
    legacy_push(&t, MicroOtaMethod::Session, "1.0.1").await;
    // ... a wrong one does not.
    let wrong = ConnectOptions {
        password: Some(uota::auth::Password::new("wrong")),
        ..legacy_opts(&t)
    };
    let err = t.connect_with(wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let mut dev = t.connect().await;
    assert_eq!(dev.version().await.unwrap(), "1.0.1");
}

/// A micro-ota push installs the project's `config/ota.json`, which knows
/// nothing of uota's `legacy` switch: the device stays in legacy mode.
#[tokio::test]
async fn a_micro_ota_push_does_not_switch_legacy_off() {
    let t = start(Setup {
        legacy: true,
        password: Some("pw"),
        ..Setup::default()
    })
    .await;
    edit_project_config(&t, |cfg| {
        cfg.as_object_mut().unwrap().remove("legacy");
        cfg["maxFiles"] = 3.into();
    });
    legacy_push(&t, MicroOtaMethod::Stream, "1.0.0").await;
    let pushed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.root.join("config/ota.json")).unwrap()).unwrap();
    assert!(pushed.get("legacy").is_none(), "{pushed}");
    // Still legacy (and maxFiles did not drop to 3): a second micro-ota push
    // of the same files is accepted.
    legacy_push(&t, MicroOtaMethod::Stream, "1.0.1").await;
    legacy_push(&t, MicroOtaMethod::Session, "1.0.2").await;
}

/// micro-ota's project template: `/main.py` imports `/app/app.py` and calls
/// its `run()` at import, which loops forever. On a uota device the app
/// thread imports it, so the OTA server keeps answering, the boot is good
/// and the release is confirmed.
#[tokio::test]
async fn a_micro_ota_template_app_runs_beside_the_ota_server() {
    let t = start(Setup::default()).await;
    std::fs::remove_file(t.project.join("main.py")).unwrap();
    std::fs::remove_dir_all(t.project.join("app")).unwrap();
    std::fs::create_dir_all(t.project.join("app")).unwrap();
    std::fs::write(
        t.project.join("main.py"),
        "# Entry point: delegates to /app/app.py\nimport sys\nif '/app' not in sys.path:\n    sys.path.insert(0, '/app')\nimport app\napp.run()\n",
    )
    .unwrap();
    // Confirm after a second; a blocked event loop would reset in 3 s.
    edit_project_config(&t, |cfg| {
        cfg["confirmAfter"] = 1.into();
        cfg["watchdog"] = 3.into();
    });
    for version in ["1.0.0", "1.0.1"] {
        std::fs::write(
            t.project.join("app/app.py"),
            format!("import time\n\nVERSION = '{version}'\n\ndef run():\n    print('=== micro-ota app ===')\n    count = 0\n    while True:\n        print('uptime:', count, 's  (version', VERSION + ')')\n        time.sleep(0.2)\n        count += 1\n"),
        )
        .unwrap();
        t.push_project(version)
            .await
            .unwrap_or_else(|e| panic!("push of {version}: {e}\nlog:\n{}", t.log()));
        let info = t
            .wait_info(&format!("{version} confirmed"), |i| {
                i["version"] == version && i["release"]["state"] == "confirmed"
            })
            .await;
        assert!(info["release"]["last_rollback"].is_null(), "{info}");
        // The app runs, and the server answers beside it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let running = format!("(version {version})");
        while t.log().matches(&running).count() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app never ran:\n{}",
                t.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(t.connect().await.version().await.unwrap(), version);
    }
    assert!(!t.log().contains("restoring"), "{}", t.log());
}

/// micro-ota's start_ota session commits what it is sent and keeps the other
/// files, so a push to a micro-ota device whose `/ota_manifest.json` lists
/// what it holds sends only the files that changed.
#[tokio::test]
async fn a_micro_ota_push_sends_only_the_files_that_changed() {
    let t = start(Setup {
        legacy: true,
        password: Some("pw"),
        key: Some("k3y"),
        ..Setup::default()
    })
    .await;
    legacy_push(&t, MicroOtaMethod::Session, "1.0.0").await;
    // What a micro-ota device keeps after that push: its manifest file.
    let (project, bundle) = common::project_bundle(&t.project, PushMode::Full, "1.0.0");
    let mut files = serde_json::Map::new();
    for f in &bundle.manifest().files {
        let on_device = std::fs::read(t.root.join(&f.path)).unwrap();
        files.insert(
            f.path.clone(),
            serde_json::json!({"size": on_device.len(), "sha256": sha256_hex(&on_device)}),
        );
    }
    std::fs::write(
        t.root.join("ota_manifest.json"),
        serde_json::to_vec(&serde_json::json!({"version": "1.0.0", "files": files})).unwrap(),
    )
    .unwrap();
    let changed = t.project.join("main.py");
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&changed, &text).unwrap();

    let (_, bundle) = common::project_bundle(&t.project, PushMode::Full, "1.0.1");
    let mut dev = t.connect_with(legacy_opts(&t)).await.unwrap();
    let opts = PushOptions {
        signing_key: project.secrets.signing_key.clone(),
        ..PushOptions::default()
    };
    let report = dev
        .push_bundle(&bundle, &opts, &mut |_| {})
        .await
        .expect("delta push");
    assert_eq!(report.files_sent, 1, "{report:?}");
    assert_eq!(report.files_skipped, bundle.manifest().files.len() - 1);
    assert_installed(&t, &bundle, "1.0.1").await;
    assert_eq!(
        std::fs::read_to_string(t.root.join("main.py")).unwrap(),
        text
    );
}
