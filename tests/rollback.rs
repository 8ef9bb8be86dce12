//! A broken release is rolled back by the device itself, with no host involved.

mod common;

use common::{start, Setup, TestDevice};
use uota::device::PushOptions;
use uota::PushMode;

fn set_config(t: &TestDevice, key: &str, value: serde_json::Value) {
    let path = t.project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

async fn push(t: &TestDevice, version: &str) {
    try_push(t, version).await.expect("push");
}

async fn try_push(t: &TestDevice, version: &str) -> uota::Result<uota::device::PushReport> {
    let (_, bundle) = common::project_bundle(&t.project, PushMode::Full, version);
    let mut dev = t.connect().await;
    dev.push_bundle(&bundle, &PushOptions::default(), &mut |_| {})
        .await
}

/// Push a release that fails on the device: the push waits for the device
/// to answer again, which it does either on the new release (before the
/// failure shows) or already rolled back, which the push then reports.
/// Wait until the device runs `version` again after a rollback; its info.
async fn wait_rolled_back_to(t: &TestDevice, version: &str) -> serde_json::Value {
    t.wait_info(&format!("rollback to {version}"), |i| {
        i["version"] == version && !i["release"]["last_rollback"].is_null()
    })
    .await
}

async fn push_broken(t: &TestDevice, version: &str) {
    match try_push(t, version).await {
        Ok(r) => assert_eq!(r.version, version),
        Err(uota::Error::ReleaseRefused { reason, message }) => {
            assert_eq!(reason, "rolled_back", "{message}");
            assert!(message.contains(version), "{message}");
        }
        Err(e) => panic!("push of {version}: {e}"),
    }
}

async fn confirmed_release(t: &TestDevice, version: &str) {
    // Confirm quickly: a release that survives one second is healthy.
    set_config(t, "confirmAfter", 1.into());
    set_config(t, "watchdog", 3.into());
    push(t, version).await;
    t.wait_info(&format!("{version} confirmed"), |i| {
        i["version"] == version && i["release"]["state"] == "confirmed"
    })
    .await;
}

#[tokio::test]
async fn an_app_that_crashes_at_start_is_rolled_back() {
    let t = start(Setup::default()).await;
    confirmed_release(&t, "1.0.0").await;
    let good_main = std::fs::read(t.project.join("main.py")).unwrap();

    std::fs::write(
        t.project.join("main.py"),
        "async def run():\n    raise ValueError('broken release')\n",
    )
    .unwrap();
    push_broken(&t, "2.0.0").await;
    let info = wait_rolled_back_to(&t, "1.0.0").await;
    let rb = &info["release"]["last_rollback"];
    assert_eq!(rb["from"], "2.0.0", "{info}");
    assert_eq!(rb["to"], "1.0.0", "{info}");
    assert!(!rb["reason"].as_str().unwrap_or("").is_empty(), "{info}");
    let mut dev = t.connect().await;
    assert_eq!(
        dev.get("main.py").await.unwrap(),
        good_main,
        "old main.py restored"
    );
}

#[tokio::test]
async fn an_app_that_hangs_the_device_is_rolled_back_by_the_watchdog() {
    let t = start(Setup::default()).await;
    confirmed_release(&t, "1.0.0").await;
    // Blocks the event loop (and with it the OTA server): only the watchdog can help.
    std::fs::write(
        t.project.join("main.py"),
        "async def run():\n    while True:\n        pass\n",
    )
    .unwrap();
    push_broken(&t, "3.0.0").await;
    let info = wait_rolled_back_to(&t, "1.0.0").await;
    assert_eq!(info["release"]["last_rollback"]["from"], "3.0.0", "{info}");
}

#[tokio::test]
async fn a_healthy_release_is_confirmed_and_kept() {
    let t = start(Setup::default()).await;
    confirmed_release(&t, "1.0.0").await;
    let app = t.project.join("app/counter.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# 1.1.0\n")).unwrap();
    push(&t, "1.1.0").await;
    let info = t
        .wait_info("1.1.0 confirmed", |i| {
            i["version"] == "1.1.0" && i["release"]["state"] == "confirmed"
        })
        .await;
    assert!(info["release"]["last_rollback"].is_null(), "{info}");
}

/// The runtime, its state files, the secrets and the app's own data: not
/// part of a release.
fn not_app(path: &str) -> bool {
    path == "lib/uota" || path == "data" || path.starts_with("ota_") || path.starts_with("config/.")
}

/// A release pushed while the one before it is still pending (within its
/// confirmation window) and that then fails rolls back to that one, not to
/// the release confirmed before it (here: no app at all). The commit of the
/// second confirmed the first, which was running healthy.
#[tokio::test]
async fn a_release_that_fails_right_after_a_pending_one_rolls_back_to_it() {
    let t = start(Setup::default()).await;
    // A stays pending for the whole test unless something confirms it.
    set_config(&t, "confirmAfter", 600.into());
    set_config(&t, "watchdog", 3.into());
    push(&t, "1.0.0").await;
    let info = t
        .wait_info("1.0.0 running", |i| i["version"] == "1.0.0")
        .await;
    assert_eq!(info["release"]["state"], "pending", "{info}");
    let a_files = common::wire_snapshot(&t, not_app).await;
    assert!(a_files.contains_key("app/counter.py"), "{a_files:?}");

    // B fails at import, on every boot.
    std::fs::write(
        t.project.join("main.py"),
        "raise ValueError('broken at import')\n",
    )
    .unwrap();
    std::fs::write(t.project.join("app/extra.py"), "X = 1\n").unwrap();
    push_broken(&t, "2.0.0").await;
    let info = wait_rolled_back_to(&t, "1.0.0").await;
    let rb = &info["release"]["last_rollback"];
    assert_eq!(rb["from"], "2.0.0", "{info}");
    assert_eq!(rb["to"], "1.0.0", "{info}");
    assert_eq!(info["release"]["state"], "confirmed", "{info}");
    let now = common::wire_snapshot(&t, not_app).await;
    assert_eq!(now, a_files, "A's files, exactly");
    assert!(
        t.log().contains("confirmed before"),
        "the confirmation is logged:\n{}",
        t.log()
    );
}
