//! Attacks from The Update Framework's list, each against a virtual device:
//! the attack is refused with a clear error, the device keeps running its
//! release, answers `ping`, and nothing outside staging changed.
//! (docs/security.md maps each attack to its test.)

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{start, RawClient, Setup, TestDevice};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uota::auth::{FleetKey, SigningKey};
use uota::bundle::Bundle;
use uota::compat::Compat;
use uota::config::Project;
use uota::device::PushOptions;
use uota::manifest::{FileEntry, Manifest};
use uota::release::ReleaseClaims;
use uota::ErrorKind;
use uota::PushMode;

fn project_manifest(t: &TestDevice, version: &str, marker: &str) -> (Project, Manifest) {
    // Each version's main.py differs, so each release has its own content.
    let main = t.project.join("main.py");
    let text = std::fs::read_to_string(&main).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("# release "))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&main, format!("{text}\n# release {marker}\n")).unwrap();
    let project = Project::load(&t.project).unwrap();
    let mut m = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    m.version = version.into();
    (project, m)
}

fn opts(key: Option<&SigningKey>, release: Option<u64>) -> PushOptions {
    PushOptions {
        signing_key: key.cloned(),
        release,
        ..PushOptions::default()
    }
}

async fn push(
    t: &TestDevice,
    version: &str,
    opts: &PushOptions,
) -> uota::Result<uota::device::PushReport> {
    let (project, m) = project_manifest(t, version, version);
    let mut dev = t.connect().await;
    let r = dev.push(&project.root, &m, opts, &mut |_| {}).await;
    if r.is_ok() {
        t.wait_version(version).await;
    }
    r
}

/// The device's files (outside staging and state that changes by itself), over the wire.
async fn snapshot(t: &TestDevice) -> BTreeMap<String, String> {
    common::wire_snapshot(t, |path| {
        path.starts_with("ota_stage")
            || path.starts_with("ota_prev")
            || path.starts_with("data")
            || path == "config/.ota.secrets.json" // never readable
            || path == "ota_boot_state.json"
    })
    .await
}

/// The device answers ping, runs `version`, and its files are `before`.
async fn unchanged(t: &TestDevice, version: &str, before: &BTreeMap<String, String>) {
    let mut dev = t.connect().await;
    dev.ping().await.expect("device still answers ping");
    assert_eq!(dev.version().await.unwrap(), version);
    assert_eq!(
        &snapshot(t).await,
        before,
        "files changed after a refused attack"
    );
}

/// A TCP relay that records every byte the host sends to the device.
struct Recorder {
    host: String,
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(t: &TestDevice) -> Recorder {
        let (host, port) = common::unique_addr();
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .unwrap();
        let target = (t.host().to_string(), t.port());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let device = tokio::net::TcpStream::connect((target.0.as_str(), target.1))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut dr, mut dw) = device.into_split();
                let log = log.clone();
                let up = async move {
                    let mut buf = vec![0u8; 8192];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                log.lock().unwrap().extend_from_slice(&buf[..n]);
                                if dw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut dr, &mut cw).await;
                };
                tokio::spawn(async move {
                    tokio::join!(up, down);
                });
            }
        });
        Recorder {
            host,
            port,
            sent,
            task,
        }
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.sent.lock().unwrap())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The payload of the first request frame for `op` in a recorded host stream
/// (after the hello line).
fn recorded_request(bytes: &[u8], op: &str) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b == b'\n').expect("hello line") + 1;
    let mut rest = &bytes[start..];
    while rest.len() >= 5 {
        let kind = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if kind == 1 {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
            if v["op"] == op {
                return payload.to_vec();
            }
        }
        rest = &rest[5 + len..];
    }
    panic!("no {op} request in the recording");
}

/// Send a recorded session's bytes verbatim on a fresh connection and
/// return the first error reply (after the hello).
async fn replay(t: &TestDevice, bytes: &[u8]) -> serde_json::Value {
    let mut c = RawClient::connect(t, false).await;
    c.send(bytes).await.unwrap();
    let hello = c.line().await;
    assert!(hello.starts_with("uota 1 "), "{hello}");
    c.enter_frames();
    loop {
        let r = c
            .response()
            .await
            .expect("a reply before the device closes");
        if r["ok"] == false {
            return r;
        }
    }
}

#[tokio::test]
async fn a_recorded_signed_session_replayed_later_is_refused() {
    let key = SigningKey::new("fleet-of-one");
    let t = start(Setup {
        key: Some("fleet-of-one"),
        ..Setup::default()
    })
    .await;
    // Record a valid push of 2.0.0 through the relay.
    let rec = Recorder::start(&t).await;
    let (project, m) = project_manifest(&t, "2.0.0", "two");
    let mut opts_b = opts(Some(&key), Some(2));
    opts_b.delta = false;
    opts_b.wait = None; // one recorded connection, nothing after the commit
    let mut dev = uota::Device::connect_tcp(&rec.host, rec.port, t.options())
        .await
        .unwrap();
    dev.push(&project.root, &m, &opts_b, &mut |_| {})
        .await
        .unwrap();
    t.wait_version("2.0.0").await;
    let recorded = rec.take();
    assert!(recorded.len() > 1000, "the session was recorded");
    // The owner moves on to 3.0.0, still release 2 (the same number is allowed).
    push(&t, "3.0.0", &opts(Some(&key), Some(2))).await.unwrap();
    let before = snapshot(&t).await;
    // The attacker replays the captured 2.0.0 session byte for byte: its
    // key proof (and every sealed request after it) covers another
    // session's nonce, so it fails at the first step.
    let r = replay(&t, &recorded).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    unchanged(&t, "3.0.0", &before).await;
    // Past authentication (a fresh, honest auth), the recorded begin is
    // sealed to the old session and its signature to the old nonce.
    let mut c = RawClient::connect(&t, true).await;
    let begin = recorded_request(&recorded, "begin");
    c.frame(uota::protocol::FrameType::Request, &begin)
        .await
        .unwrap();
    let r = c.response().await.unwrap();
    assert_eq!(r["err"], "unbound", "{r}");
    unchanged(&t, "3.0.0", &before).await;
    // Once a higher release is in, the floor refuses it even earlier.
    push(&t, "4.0.0", &opts(Some(&key), Some(3))).await.unwrap();
    let before = snapshot(&t).await;
    let r = replay(&t, &recorded).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    unchanged(&t, "4.0.0", &before).await;
}

#[tokio::test]
async fn a_recorded_authenticated_session_fails_authentication_when_replayed() {
    let t = start(Setup {
        password: Some("pw"),
        key: Some("k"),
        ..Setup::default()
    })
    .await;
    let key = SigningKey::new("k");
    push(&t, "1.0.0", &opts(Some(&key), None)).await.unwrap();
    let rec = Recorder::start(&t).await;
    let mut dev = uota::Device::connect_tcp(&rec.host, rec.port, t.options())
        .await
        .unwrap();
    dev.rm("app/counter.py").await.unwrap();
    drop(dev);
    let recorded = rec.take();
    // Put the file back, then replay the captured "rm" session.
    push(&t, "1.0.1", &opts(Some(&key), None)).await.unwrap();
    let before = snapshot(&t).await;
    let r = replay(&t, &recorded).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    unchanged(&t, "1.0.1", &before).await;
    // The password never crossed the wire.
    assert!(
        !String::from_utf8_lossy(&recorded).contains("\"pw\""),
        "plaintext password on the wire"
    );
}

#[tokio::test]
async fn a_correctly_signed_older_release_is_refused_unless_signed_as_a_rollback() {
    let key = SigningKey::new("k");
    let t = start(Setup {
        key: Some("k"),
        ..Setup::default()
    })
    .await;
    push(&t, "5.0.0", &opts(Some(&key), Some(5))).await.unwrap();
    assert_eq!(t.connect().await.highest_release(), 5);
    let before = snapshot(&t).await;
    // Release 4, correctly signed: a downgrade.
    let err = push(&t, "4.0.0", &opts(Some(&key), Some(4)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReleaseRefused, "{err}");
    assert!(err.to_string().contains("downgrade"), "{err}");
    unchanged(&t, "5.0.0", &before).await;
    // The same number again is accepted (a re-push of release 5).
    push(&t, "5.0.1", &opts(Some(&key), Some(5))).await.unwrap();
    // Signed as a rollback, release 4 installs; the floor stays at 5.
    let mut rb = opts(Some(&key), Some(4));
    rb.rollback = true;
    push(&t, "4.0.0", &rb).await.unwrap();
    assert_eq!(t.connect().await.highest_release(), 5);
    let before = snapshot(&t).await;
    let err = push(&t, "4.0.1", &opts(Some(&key), Some(4)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReleaseRefused, "{err}");
    unchanged(&t, "4.0.0", &before).await;
    // Without an explicit number the host takes the next one.
    let r = push(&t, "6.0.0", &opts(Some(&key), None)).await.unwrap();
    assert_eq!(r.release, 6);
    assert_eq!(t.connect().await.highest_release(), 6);
}

/// Begin a push by hand, signing `claims` over `signed` but sending `sent`
/// (and `begin_edit` applied to the begin request).
async fn begin_by_hand(
    t: &TestDevice,
    key: &SigningKey,
    signed: &Manifest,
    sent: &Manifest,
    edit_claims: impl FnOnce(&mut ReleaseClaims),
    edit_begin: impl FnOnce(&mut serde_json::Value),
) -> serde_json::Value {
    let mut c = RawClient::connect(t, true).await;
    let hello = c.hello.clone().unwrap();
    let mut claims = ReleaseClaims {
        release: hello.release + 1,
        rollback: false,
        mode: PushMode::Full,
        runtime: false,
        nonce: hello.nonce.clone(),
        device: hello.id.clone(),
        compat: Compat::default(),
    };
    edit_claims(&mut claims);
    let sig = claims.sign(signed, key).unwrap();
    let mut begin = json!({
        "op": "begin", "version": sent.version, "mode": "full",
        "count": sent.files.len(), "runtime": false, "sig": sig,
        "release": claims.release, "device": claims.device,
    });
    if !claims.compat.is_empty() {
        begin["compat"] = serde_json::to_value(&claims.compat).unwrap();
    }
    edit_begin(&mut begin);
    c.begin_stream(begin, &sent.manifest_lines()).await
}

#[tokio::test]
async fn tampered_manifests_and_claims_are_refused() {
    let key = SigningKey::new("k");
    let t = start(Setup {
        key: Some("k"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(Some(&key), None)).await.unwrap();
    let before = snapshot(&t).await;
    let (_, m) = project_manifest(&t, "2.0.0", "two");
    // A file's hash swapped after signing.
    let mut evil = m.clone();
    evil.files[0] = FileEntry::from_bytes(evil.files[0].path.clone(), b"evil()\n");
    let r = begin_by_hand(&t, &key, &m, &evil, |_| {}, |_| {}).await;
    assert_eq!(r["err"], "sig_mismatch", "{r}");
    // A file added after signing.
    let mut more = m.clone();
    more.files
        .push(FileEntry::from_bytes("zz_extra.py", b"x = 1\n"));
    let r = begin_by_hand(&t, &key, &m, &more, |_| {}, |_| {}).await;
    assert_eq!(r["err"], "sig_mismatch", "{r}");
    // Claims changed after signing: release number, mode, rollback flag, device.
    for (field, value) in [
        ("release", json!(99)),
        ("mode", json!("fast")),
        ("rollback", json!(true)),
        ("runtime", json!(true)),
    ] {
        let r = begin_by_hand(&t, &key, &m, &m, |_| {}, |b| b[field] = value.clone()).await;
        assert_eq!(r["err"], "sig_mismatch", "{field}: {r}");
    }
    // Unsigned, and signed but without a release number.
    let r = begin_by_hand(
        &t,
        &key,
        &m,
        &m,
        |_| {},
        |b| {
            b.as_object_mut().unwrap().remove("sig");
        },
    )
    .await;
    assert_eq!(r["err"], "sig_required", "{r}");
    let r = begin_by_hand(
        &t,
        &key,
        &m,
        &m,
        |_| {},
        |b| {
            b.as_object_mut().unwrap().remove("release");
        },
    )
    .await;
    assert_eq!(r["err"], "sig_required", "{r}");
    // The untampered begin is accepted (so the refusals above are the tampering's).
    let r = begin_by_hand(&t, &key, &m, &m, |_| {}, |_| {}).await;
    assert_eq!(r["ok"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    unchanged(&t, "1.0.0", &before).await;
}

#[tokio::test]
async fn releases_for_another_device_port_board_or_version_are_refused() {
    let key = SigningKey::new("k");
    let t = start(Setup {
        key: Some("k"),
        device_id: Some("unit-7"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(Some(&key), None)).await.unwrap();
    let before = snapshot(&t).await;
    let (_, m) = project_manifest(&t, "2.0.0", "two");
    let r = begin_by_hand(
        &t,
        &key,
        &m,
        &m,
        |c| c.device = "unit-8".into(),
        |b| b["device"] = json!("unit-8"),
    )
    .await;
    assert_eq!(r["err"], "wrong_device", "{r}");
    let wrong: [(&str, Compat); 3] = [
        (
            "port",
            Compat {
                port: vec!["esp32".into(), "rp2".into()],
                ..Compat::default()
            },
        ),
        (
            "board",
            Compat {
                board: vec!["Raspberry Pi Pico W".into()],
                ..Compat::default()
            },
        ),
        (
            "micropython",
            Compat {
                micropython: Some(("9.0".into(), "9.99".into())),
                ..Compat::default()
            },
        ),
    ];
    for (what, compat) in wrong {
        let mut o = opts(Some(&key), None);
        o.compat = compat;
        let err = push(&t, "2.0.0", &o).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReleaseRefused, "{what}: {err}");
        assert!(err.to_string().contains("incompatible"), "{what}: {err}");
    }
    unchanged(&t, "1.0.0", &before).await;
    // A release that fits this device (the unix port reports "linux").
    let mut o = opts(Some(&key), None);
    o.compat = Compat {
        port: vec!["esp32".into(), "linux".into()],
        micropython: Some(("1.0".into(), "99".into())),
        ..Compat::default()
    };
    push(&t, "2.0.0", &o).await.unwrap();
}

#[tokio::test]
async fn a_key_derived_for_one_device_cannot_sign_for_another() {
    let fleet = FleetKey::new("the-fleet-key");
    let key_a = fleet.derive("dev-a");
    let key_b = fleet.derive("dev-b");
    // SimOptions wants a &'static str key: leak the two derived keys (test only).
    let ka: &'static str = Box::leak(key_a.expose().to_string().into_boxed_str());
    let kb: &'static str = Box::leak(key_b.expose().to_string().into_boxed_str());
    let a = start(Setup {
        key: Some(ka),
        device_id: Some("dev-a"),
        ..Setup::default()
    })
    .await;
    let b = start(Setup {
        key: Some(kb),
        device_id: Some("dev-b"),
        ..Setup::default()
    })
    .await;
    // The fleet key signs for both (each push derives the device's own key).
    let fleet_opts = PushOptions {
        fleet_key: Some(fleet.clone()),
        ..PushOptions::default()
    };
    push(&a, "1.0.0", &fleet_opts).await.unwrap();
    push(&b, "1.0.0", &fleet_opts).await.unwrap();
    let before = snapshot(&b).await;
    // Device A's key, extracted, does not sign for device B.
    let err = push(&b, "6.6.6", &opts(Some(&key_a), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    unchanged(&b, "1.0.0", &before).await;
    // Nor does another fleet key.
    let other = PushOptions {
        fleet_key: Some(FleetKey::new("another-fleet")),
        ..PushOptions::default()
    };
    let err = push(&b, "6.6.6", &other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    unchanged(&b, "1.0.0", &before).await;
}

#[tokio::test]
async fn rotating_a_key_needs_the_current_key_and_never_sends_the_new_one_in_plaintext() {
    let old = SigningKey::new("old-key");
    let new = SigningKey::new(uota::auth::random_key_hex());
    let t = start(Setup {
        key: Some("old-key"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(Some(&old), None)).await.unwrap();
    // A rotation signed with a wrong current key is refused; the key stays.
    let mut dev = t.connect().await;
    let err = dev
        .rotate_key(&SigningKey::new("guess"), &new)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    drop(dev);
    // The real rotation, recorded on the wire.
    let rec = Recorder::start(&t).await;
    let mut dev = uota::Device::connect_tcp(&rec.host, rec.port, t.options())
        .await
        .unwrap();
    dev.rotate_key(&old, &new).await.unwrap();
    drop(dev);
    let recorded = rec.take();
    assert!(
        !String::from_utf8_lossy(&recorded).contains(new.expose()),
        "the new key crossed the wire in plaintext"
    );
    // Replaying the rotation in another session is refused (its key proof
    // is bound to the old nonce); so is its rekey request in an honest session.
    let r = replay(&t, &recorded).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    let mut c = common::RawClient::connect_unauthenticated(&t).await;
    c.authenticate(uota::auth::AuthMethod::Key, new.as_bytes())
        .await;
    let rekey = recorded_request(&recorded, "rekey");
    c.frame(uota::protocol::FrameType::Request, &rekey)
        .await
        .unwrap();
    let r = c.response().await.unwrap();
    assert_eq!(r["err"], "unbound", "{r}");
    // The old key no longer signs; the new one does.
    let err = push(&t, "2.0.0", &opts(Some(&old), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureMismatch, "{err}");
    push(&t, "2.0.0", &opts(Some(&new), None)).await.unwrap();
    // The device log never shows either key.
    let log = t.log();
    assert!(!log.contains(old.expose()) && !log.contains(new.expose()));
}

#[tokio::test]
async fn oversized_and_endless_transfers_are_cut_off() {
    let t = start(Setup::default()).await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let before = snapshot(&t).await;
    // More files than the device accepts (maxFiles, 1000 by default).
    let mut c = RawClient::connect(&t, true).await;
    c.req(
        json!({"op": "begin", "version": "9", "mode": "full", "count": 100_000, "runtime": false}),
    )
    .await;
    c.data(b"").await.unwrap();
    let r = c.response().await.unwrap();
    assert_eq!(r["err"], "too_large", "{r}");
    // A release bigger than the free flash: refused after the manifest, before any file.
    let mut c = RawClient::connect(&t, true).await;
    let huge = FileEntry {
        path: "app/huge.bin".into(),
        size: 1 << 40,
        sha256: [7; 32],
    };
    let m = Manifest::new("9", vec![huge]).unwrap();
    let r = c.begin(&m).await;
    assert_eq!(r["err"], "no_space", "{r}");
    // Endless data: a file stream that goes on past the size the manifest gave.
    let (_, m) = project_manifest(&t, "2.0.0", "two");
    let mut c = RawClient::connect(&t, true).await;
    let r = c.begin(&m).await;
    assert_eq!(r["ok"], true, "{r}");
    let f = &m.files[0];
    c.req(json!({"op": "file", "path": f.path, "size": f.size, "sha256": f.sha256_hex()}))
        .await;
    let chunk = vec![b'#'; 4096];
    let mut refused = None;
    for _ in 0..64 {
        if c.data(&chunk).await.is_err() {
            break;
        }
    }
    let _ = c.data(b"").await;
    if let Some(r) = c.response().await {
        refused = Some(r);
    }
    let r = refused.expect("an error reply");
    assert_eq!(r["err"], "size_mismatch", "{r}");
    unchanged(&t, "1.0.0", &before).await;
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_while_others_are_served() {
    let t = start(Setup {
        session_timeout: Some(2),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let mut slow = RawClient::connect(&t, true).await;
    // A request frame header announcing 200 bytes, then one byte every 300 ms.
    slow.send(&[1, 0, 0, 0, 200]).await.unwrap();
    let started = Instant::now();
    let mut dropped = false;
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_secs(12) {
        if slow.send(b" ").await.is_err() {
            dropped = true;
            break;
        }
        // Meanwhile another client is served.
        let mut other = t.connect().await;
        other.ping().await.expect("other clients are served");
        drop(other);
        match tokio::time::timeout(Duration::from_millis(300), slow.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                dropped = true;
                break;
            }
            _ => {}
        }
    }
    assert!(dropped, "the trickling connection was never dropped");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "dropped only after {:?}",
        started.elapsed()
    );
    t.connect().await.ping().await.unwrap();
}

#[tokio::test]
async fn a_second_push_session_gets_busy() {
    let t = start(Setup::default()).await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let before = snapshot(&t).await;
    let (_, m) = project_manifest(&t, "2.0.0", "two");
    let mut first = RawClient::connect(&t, true).await;
    assert_eq!(first.begin(&m).await["ok"], true);
    let mut second = RawClient::connect(&t, true).await;
    let r = second.begin(&m).await;
    assert_eq!(r["err"], "busy", "{r}");
    // The first session is intact: abort it and nothing changed.
    assert_eq!(first.request(json!({"op": "abort"})).await["ok"], true);
    unchanged(&t, "1.0.0", &before).await;
}

// ----- second pass (docs/security.md, "Sessions") -----

/// A listener that answers every line with `reply`, recording all it receives.
async fn answering(reply: &'static str) -> (String, u16, Arc<Mutex<Vec<u8>>>) {
    let (host, port) = common::unique_addr();
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if s.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (host, port, seen)
}

#[tokio::test]
async fn auto_never_sends_the_password_in_plaintext() {
    // Something that answers the uota hello with micro-ota's `denied`.
    let (host, port, seen) = answering("denied").await;
    let opts = uota::device::ConnectOptions {
        password: Some(uota::auth::Password::new("hunter2-secret")),
        ..uota::device::ConnectOptions::default()
    };
    let err = uota::Device::connect_tcp(&host, port, opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("--protocol micro-ota"), "{err}");
    // Give any reconnect a chance to arrive; the password never does.
    tokio::task::yield_now().await;
    let bytes = seen.lock().unwrap().clone();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("hunter2"),
        "the password was sent"
    );
    assert_eq!(bytes, b"uota 1\n", "only the hello was sent");
}

#[tokio::test]
async fn state_changing_requests_are_sealed_to_the_authenticated_session() {
    let t = start(Setup {
        password: Some("pw"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let before = snapshot(&t).await;
    // Injected: an unsealed request in an authenticated session.
    for op in [
        json!({"op": "rm", "path": "main.py"}),
        json!({"op": "wipe"}),
        json!({"op": "passwd", "verifier": ""}),
        json!({"op": "reset"}),
        json!({"op": "floor", "release": 0}),
        json!({"op": "abort"}),
    ] {
        let mut c = RawClient::connect(&t, true).await;
        c.req_raw(op.clone()).await;
        let r = c.response().await.unwrap();
        assert_eq!(r["err"], "unbound", "{op}: {r}");
        assert!(
            c.response().await.is_none(),
            "{op}: the connection stays open"
        );
        unchanged(&t, "1.0.0", &before).await;
    }
    // Replayed: the same sealed request twice, or one sealed to another session.
    let mut c = RawClient::connect(&t, true).await;
    let sealed = c.seal(json!({"op": "rm", "path": "no-such-file"}));
    c.frame(uota::protocol::FrameType::Request, &sealed)
        .await
        .unwrap();
    assert_eq!(c.response().await.unwrap()["err"], "not_found");
    c.frame(uota::protocol::FrameType::Request, &sealed)
        .await
        .unwrap();
    assert_eq!(c.response().await.unwrap()["err"], "unbound");
    let mut other = RawClient::connect(&t, true).await;
    other
        .frame(uota::protocol::FrameType::Request, &sealed)
        .await
        .unwrap();
    assert_eq!(other.response().await.unwrap()["err"], "unbound");
    // Reordered: sequence number 2 before 1.
    let mut c = RawClient::connect(&t, true).await;
    let first = c.seal(json!({"op": "rm", "path": "nothing-1"}));
    let second = c.seal(json!({"op": "rm", "path": "nothing-2"}));
    c.frame(uota::protocol::FrameType::Request, &second)
        .await
        .unwrap();
    let _ = first;
    assert_eq!(c.response().await.unwrap()["err"], "unbound");
    // Altered in transit: the path of a sealed request changed.
    let mut c = RawClient::connect(&t, true).await;
    let sealed = String::from_utf8(c.seal(json!({"op": "rm", "path": "nothing-x"}))).unwrap();
    let altered = sealed.replace("nothing-x", "main.py");
    c.frame(uota::protocol::FrameType::Request, altered.as_bytes())
        .await
        .unwrap();
    assert_eq!(c.response().await.unwrap()["err"], "unbound");
    unchanged(&t, "1.0.0", &before).await;
    // The manifest stream (DATA frames, unsealed) is bound through the
    // sealed begin's digest: a stream swapped on the path, or a begin
    // without the digest, stages nothing.
    let (_, honest) = project_manifest(&t, "2.0.0", "two");
    let (_, swapped) = project_manifest(&t, "2.0.0", "evil");
    let begin = json!({
        "op": "begin", "version": "2.0.0", "mode": "full",
        "count": honest.files.len(), "runtime": false,
        "mdigest": uota::auth::sha256_hex(&honest.manifest_lines()),
    });
    let mut c = RawClient::connect(&t, true).await;
    let r = c
        .begin_stream(begin.clone(), &swapped.manifest_lines())
        .await;
    assert_eq!(r["err"], "unbound", "{r}");
    let mut without = begin.clone();
    without.as_object_mut().unwrap().remove("mdigest");
    let mut c = RawClient::connect(&t, true).await;
    c.req(without).await;
    c.data(&honest.manifest_lines()).await.unwrap();
    c.data(b"").await.unwrap();
    assert_eq!(c.response().await.unwrap()["err"], "unbound");
    unchanged(&t, "1.0.0", &before).await;
    // The same begin with its own stream is taken.
    let mut c = RawClient::connect(&t, true).await;
    let r = c.begin_stream(begin, &honest.manifest_lines()).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(c.request(json!({"op": "abort"})).await["ok"], true);
    // The owner's own commands are sealed by the host and work.
    let mut dev = t.connect().await;
    dev.rm("app/counter.py").await.unwrap();
    assert!(dev
        .ls("/app")
        .await
        .unwrap()
        .iter()
        .all(|e| e.name != "counter.py"));
}

#[tokio::test]
async fn a_device_with_a_key_takes_changes_only_from_its_key_holder() {
    let t = start(Setup {
        key: Some("device-key"),
        ..Setup::default()
    })
    .await;
    let key = SigningKey::new("device-key");
    push(&t, "1.0.0", &opts(Some(&key), None)).await.unwrap();
    let before = snapshot(&t).await;
    // Without proof of the key: reads work, changes do not.
    for (op, code) in [
        (json!({"op": "rm", "path": "main.py"}), "auth_required"),
        (json!({"op": "wipe"}), "auth_required"),
        (json!({"op": "reset"}), "auth_required"),
        (
            json!({"op": "passwd", "verifier": common::sha256_hex(b"mine")}),
            "auth_required",
        ),
        (json!({"op": "floor", "release": 0}), "auth_required"),
        (
            json!({"op": "begin", "version": "x", "mode": "full", "count": 0, "runtime": false}),
            "sig_required",
        ),
    ] {
        let mut c = common::RawClient::connect_unauthenticated(&t).await;
        let r = c.request(json!({"op": "ls", "path": "/"})).await;
        assert_eq!(r["ok"], true, "{r}");
        c.req_raw(op.clone()).await;
        let r = c.response().await.unwrap();
        assert_eq!(r["err"], code, "{op}: {r}");
        unchanged(&t, "1.0.0", &before).await;
    }
    // A wrong key does not authenticate.
    let mut c = common::RawClient::connect_unauthenticated(&t).await;
    let h = c.hello.clone().unwrap();
    let mac =
        uota::auth::challenge_response(uota::auth::AuthMethod::Key, b"guess", &h.nonce, &h.id);
    let r = c
        .request(json!({"op": "auth", "mac": mac, "with": "key"}))
        .await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    // Two unauthenticated resets inside the confirmation window cannot roll
    // the release back: they are refused.
    let (project, m) = project_manifest(&t, "2.0.0", "two");
    let mut dev = t.connect().await;
    dev.push(&project.root, &m, &opts(Some(&key), None), &mut |_| {})
        .await
        .unwrap();
    t.wait_version("2.0.0").await;
    for _ in 0..2 {
        let mut c = common::RawClient::connect_unauthenticated(&t).await;
        c.req_raw(json!({"op": "reset"})).await;
        assert_eq!(c.response().await.unwrap()["err"], "auth_required");
    }
    let mut dev = t.connect().await;
    assert_eq!(dev.version().await.unwrap(), "2.0.0");
    // The key holder's commands work (the host proves the key, then seals).
    dev.rm("app/counter.py").await.unwrap();
    let info = dev.info().await.unwrap();
    let warnings = info.extra["warnings"].to_string();
    assert!(warnings.contains("no password"), "{warnings}");
}

#[tokio::test]
async fn password_verifiers_are_salted_per_device_and_answers_bound_to_one_device() {
    let a = start(Setup {
        password: Some("same-password"),
        ..Setup::default()
    })
    .await;
    let b = start(Setup {
        password: Some("same-password"),
        ..Setup::default()
    })
    .await;
    let stored = |t: &TestDevice| -> String {
        let text = std::fs::read_to_string(t.root.join("config/.ota.secrets.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["otaPassword"].as_str().unwrap().to_string()
    };
    let (va, vb) = (stored(&a), stored(&b));
    assert!(va.starts_with("pbkdf2-sha256$"), "{va}");
    assert_ne!(va, vb, "one password, two devices, two verifiers");
    let iterations: u32 = va.split('$').nth(1).unwrap().parse().unwrap();
    assert!(iterations >= 20_000, "{iterations}");
    // A's stored verifier (flash extraction) does not authenticate to B.
    let secret_a = uota::auth::verifier_secret(&va).unwrap();
    let mut c = common::RawClient::connect_unauthenticated(&b).await;
    let h = c.hello.clone().unwrap();
    assert_eq!(
        h.kdf,
        vb.rsplit_once('$').unwrap().0,
        "the hello names B's own salt"
    );
    let mac = uota::auth::challenge_response(
        uota::auth::AuthMethod::Password,
        &secret_a,
        &h.nonce,
        &h.id,
    );
    let r = c.request(json!({"op": "auth", "mac": mac})).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    // An answer computed for A's id does not work on B, even with B's secret.
    let secret_b = uota::auth::verifier_secret(&vb).unwrap();
    let mut c = common::RawClient::connect_unauthenticated(&b).await;
    let h = c.hello.clone().unwrap();
    let ida = a.connect().await.device_id().to_string();
    let mac =
        uota::auth::challenge_response(uota::auth::AuthMethod::Password, &secret_b, &h.nonce, &ida);
    let r = c.request(json!({"op": "auth", "mac": mac})).await;
    assert_eq!(r["err"], "auth_failed", "{r}");
    // The owner's password works on both, and passwd installs a fresh salt.
    let mut dev = b.connect().await;
    dev.passwd(Some(&uota::auth::Password::new("same-password")))
        .await
        .unwrap();
    assert_ne!(stored(&b), vb);
    b.connect().await.ping().await.unwrap();
    a.connect().await.ping().await.unwrap();
}

#[tokio::test]
async fn release_numbers_are_bounded_and_a_high_floor_has_an_authenticated_way_out() {
    let t = start(Setup {
        password: Some("pw"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let before = snapshot(&t).await;
    let (_, m) = project_manifest(&t, "9.0.0", "nine");
    for release in [
        json!(9007199254740993u64),
        json!(18446744073709551615u64),
        json!(1e300),
    ] {
        let mut c = RawClient::connect(&t, true).await;
        let begin = json!({"op": "begin", "version": "9", "mode": "full", "count": m.files.len(), "runtime": false, "release": release});
        let r = c.begin_stream(begin, &m.manifest_lines()).await;
        assert_eq!(r["err"], "bad_request", "{release}: {r}");
    }
    unchanged(&t, "1.0.0", &before).await;
    // A floor poisoned by an older runtime (above 2^64): the host still reads
    // the hello, refuses to sign past 2^53, and the owner lowers the floor.
    std::fs::write(
        t.root.join("ota_floor.json"),
        br#"{"release": 36893488147419103232}"#,
    )
    .unwrap();
    let mut dev = t.connect().await;
    assert_eq!(dev.highest_release(), 1 << 53);
    let (project, m) = project_manifest(&t, "2.0.0", "two");
    let err = dev
        .push(&project.root, &m, &opts(None, None), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("uota floor"), "{err}");
    // Without authentication the floor cannot be touched.
    let mut c = common::RawClient::connect_unauthenticated(&t).await;
    c.req_raw(json!({"op": "floor", "release": 0})).await;
    assert_eq!(c.response().await.unwrap()["err"], "auth_required");
    let mut dev = t.connect().await;
    dev.set_floor(1).await.unwrap();
    push(&t, "2.0.0", &opts(None, None)).await.unwrap();
    assert_eq!(t.connect().await.highest_release(), 2);
}

/// A hostile peer for the host's `get`: answers the hello as a uota device
/// (or, with `uota` false, `unknown` as micro-ota does), then answers any
/// request with `announce` and streams `body` bytes, `chunk` at a time,
/// `pause` apart, `chunks` times.
async fn hostile_get_peer(
    uota_peer: bool,
    announce: u64,
    chunk: usize,
    pause: Duration,
    chunks: usize,
) -> (String, u16) {
    let (host, port) = common::unique_addr();
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await; // the hello line
        if uota_peer {
            let hello = r#"uota 1 {"proto":1,"max_frame":8192,"auth":false,"nonce":"00","id":"evil","release":0}"#;
            let _ = s.write_all(format!("{hello}\n").as_bytes()).await;
            let _ = s.read(&mut buf).await; // the get request
            let res = format!(r#"{{"ok":true,"size":{announce}}}"#);
            let _ = s
                .write_all(&uota::protocol::frame::encode_to_vec(
                    uota::protocol::FrameType::Response,
                    res.as_bytes(),
                ))
                .await;
        } else {
            let _ = s.write_all(b"unknown\n").await;
            let _ = s.read(&mut buf).await; // "get path"
            let _ = s.write_all(format!("{announce}\n").as_bytes()).await;
        }
        let data = vec![b'x'; chunk];
        for _ in 0..chunks {
            let bytes = if uota_peer {
                uota::protocol::frame::encode_to_vec(uota::protocol::FrameType::Data, &data)
            } else {
                data.clone()
            };
            if s.write_all(&bytes).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    (host, port)
}

#[tokio::test]
async fn the_hosts_get_is_bounded_in_size_time_and_memory() {
    let quick = uota::device::ConnectOptions {
        timeout: Duration::from_secs(1),
        ..uota::device::ConnectOptions::default()
    };
    // Announces 5 bytes, then streams without end: refused at the first excess byte.
    let (h, p) = hostile_get_peer(true, 5, 8192, Duration::ZERO, 100_000).await;
    let mut dev = uota::Device::connect_tcp(&h, p, quick.clone())
        .await
        .unwrap();
    let err = dev.get("x").await.unwrap_err();
    assert!(err.to_string().contains("sent more"), "{err}");
    // Announces more than any board holds: refused before reading a byte.
    let (h, p) = hostile_get_peer(true, u64::MAX / 2, 8192, Duration::ZERO, 10).await;
    let mut dev = uota::Device::connect_tcp(&h, p, quick.clone())
        .await
        .unwrap();
    let mut sink = Vec::new();
    let err = dev.get_to("x", &mut sink).await.unwrap_err();
    assert!(err.to_string().contains("announced"), "{err}");
    assert!(sink.is_empty());
    // Trickles a byte now and then: the whole transfer has a deadline.
    let (h, p) = hostile_get_peer(true, 5, 1, Duration::from_millis(700), 5).await;
    let mut dev = uota::Device::connect_tcp(&h, p, quick.clone())
        .await
        .unwrap();
    let err = dev.get("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // micro-ota's line protocol: a 2^64-1 byte announcement is refused at once.
    let (h, p) = hostile_get_peer(false, u64::MAX, 8192, Duration::ZERO, 10).await;
    let mut dev = uota::Device::connect_tcp(&h, p, quick.clone())
        .await
        .unwrap();
    assert_eq!(dev.peer(), &uota::device::Peer::MicroOta);
    let err = dev.get("x").await.unwrap_err();
    assert!(err.to_string().contains("announced"), "{err}");
    // ... and a legacy body streamed to a writer arrives exactly.
    let (h, p) = hostile_get_peer(false, 300_000, 10_000, Duration::ZERO, 30).await;
    let mut dev = uota::Device::connect_tcp(&h, p, quick).await.unwrap();
    let mut sink = Vec::new();
    assert_eq!(dev.get_to("x", &mut sink).await.unwrap(), 300_000);
    assert_eq!(sink.len(), 300_000);
}

/// Unauthenticated clients that connect, say hello and ping as fast as they
/// can, reconnecting whenever the device drops them, until `stop` is set.
fn flood(
    t: &TestDevice,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..n)
        .map(|_| {
            let (host, port) = (t.host().to_string(), t.port());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut pings = 0u64;
                let ping = uota::protocol::frame::encode_to_vec(
                    uota::protocol::FrameType::Request,
                    br#"{"op":"ping"}"#,
                );
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = tokio::net::TcpStream::connect((host.as_str(), port)).await
                    else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if s.write_all(b"uota 1\n").await.is_err() {
                        continue;
                    }
                    let mut buf = vec![0u8; 4096];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if s.write_all(&ping).await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => pings += 1,
                            _ => break,
                        }
                    }
                }
                pings
            })
        })
        .collect()
}

#[tokio::test]
async fn an_authenticated_owner_is_served_within_a_bound_while_floods_run() {
    let t = start(Setup {
        password: Some("pw"),
        ..Setup::default()
    })
    .await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders = flood(&t, 8, stop.clone());
    // Five pushes, each within 30 s (the bound docs/security.md states):
    // flood connections are the first to go at the connection limit, and
    // one that has not authenticated within 5 s is dropped.
    for i in 0..5 {
        let version = format!("2.0.{i}");
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (project, m) = project_manifest(&t, &version, &version);
            let r = async {
                let mut dev = t.connect_with(t.options()).await?;
                dev.push(&project.root, &m, &opts(None, None), &mut |_| {})
                    .await
            }
            .await;
            match r {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "push {i} not served in 30 s ({attempts} attempts): {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        t.wait_version(&version).await;
        eprintln!(
            "push {i}: {:.2} s, {attempts} attempt(s)",
            started.elapsed().as_secs_f64()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pings = 0;
    for f in flooders {
        pings += f.await.unwrap();
    }
    assert!(pings > 0, "the flood ran");
}

#[tokio::test]
async fn an_unauthenticated_push_cannot_hold_the_slot_by_trickling() {
    // No password, no key: anyone may push, but not hold the slot.
    let t = start(Setup::default()).await;
    push(&t, "1.0.0", &opts(None, None)).await.unwrap();
    let (_, m) = project_manifest(&t, "6.6.6", "evil");
    let mut holder = RawClient::connect(&t, true).await;
    assert_eq!(holder.begin(&m).await["ok"], true);
    let f = &m.files[0];
    holder
        .req(json!({"op": "file", "path": f.path, "size": f.size, "sha256": f.sha256_hex()}))
        .await;
    let trickle = tokio::spawn(async move {
        // A byte of a DATA frame header now and then: never a whole frame.
        let frame =
            uota::protocol::frame::encode_to_vec(uota::protocol::FrameType::Data, &[b'#'; 64]);
        for b in frame {
            if holder.send(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    // The owner's push gets the slot once the holder has stalled.
    let started = Instant::now();
    loop {
        match push(&t, "2.0.0", &opts(None, None)).await {
            Ok(_) => break,
            Err(e)
                if e.to_string().contains("busy")
                    && started.elapsed() < Duration::from_secs(15) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("push not served: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    trickle.abort();
    assert_eq!(t.connect().await.version().await.unwrap(), "2.0.0");
}
