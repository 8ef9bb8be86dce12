//! A push from the command line, as one step of a script: it returns with
//! the device running the new release, does nothing when nothing changed,
//! and Ctrl-C cancels it cleanly.
#![cfg(feature = "cli")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{json, ok, uota};
use common::{start, unique_addr, Setup, TestDevice};

/// How many times the device has booted (its console says so each time).
fn boots(t: &TestDevice) -> usize {
    t.log().matches("listening on").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_returns_once_the_device_runs_the_new_release() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    let report = ok(&uota(&[
        "--json",
        "full",
        "--project",
        p,
        "--version",
        "2.0.0",
    ]));
    assert!(report["restart"].as_f64().is_some(), "{report}");
    // No polling: the very next commands find the device up on 2.0.0.
    assert_eq!(
        ok(&uota(&["--json", "version", "--project", p]))["version"],
        "2.0.0"
    );
    std::fs::write(t.project.join("app/extra.py"), b"X = 1\n").unwrap();
    let report = ok(&uota(&[
        "--json",
        "fast",
        "--project",
        p,
        "--version",
        "2.0.1",
    ]));
    assert_eq!(report["files_sent"], 1, "{report}");
    assert_eq!(
        ok(&uota(&["--json", "version", "--project", p]))["version"],
        "2.0.1"
    );
    // --no-wait returns at the commit: no restart figure.
    std::fs::write(t.project.join("app/extra.py"), b"X = 2\n").unwrap();
    let report = ok(&uota(&[
        "--json",
        "fast",
        "--project",
        p,
        "--version",
        "2.0.2",
        "--no-wait",
    ]));
    assert!(report["restart"].is_null(), "{report}");
    // ... and a command right after it still gets through: connecting
    // retries while the device restarts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = uota(&["--json", "version", "--project", p]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        if json(&out)["version"] == "2.0.2" {
            break;
        }
        assert!(Instant::now() < deadline, "2.0.2 never answered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_what_the_device_already_runs_changes_nothing() {
    let t = start(Setup {
        password: Some("pw"),
        key: Some("k"),
        ..Setup::default()
    })
    .await;
    let p = t.project.to_str().unwrap();
    // 200 files: their manifest alone is about 18 KB.
    for i in 0..200 {
        std::fs::write(
            t.project.join(format!("app/m{i:03}.py")),
            format!("N = {i}\n"),
        )
        .unwrap();
    }
    let first = ok(&uota(&[
        "--json",
        "full",
        "--project",
        p,
        "--version",
        "3.0.0",
    ]));
    let boots_before = boots(&t);
    for mode in ["full", "fast"] {
        let again = ok(&uota(&[
            "--json",
            mode,
            "--project",
            p,
            "--version",
            "3.0.0",
        ]));
        assert_eq!(again["up_to_date"], true, "{mode}: {again}");
        assert_eq!(again["files_sent"], 0, "{again}");
        assert_eq!(again["release"], first["release"], "no new release number");
        assert!(again["restart"].is_null(), "{again}");
        let sent = again["wire_bytes"].as_u64().unwrap();
        let received = again["received_bytes"].as_u64().unwrap();
        // The summary (a digest of the device's manifest) is enough: a full
        // push compares it with its own manifest, a fast one with the
        // manifest the project kept from its last push to this device.
        assert!(sent + received < 1024, "{mode}: {sent} + {received} bytes");
    }
    // A kept manifest that no longer matches (altered here) costs one read
    // of the device's manifest, nothing else.
    let kept: Vec<_> = std::fs::read_dir(t.project.join(".uota/manifests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    std::fs::write(&kept[0], b"not a manifest\n").unwrap();
    let again = ok(&uota(&[
        "--json",
        "fast",
        "--project",
        p,
        "--version",
        "3.0.0",
    ]));
    assert_eq!(again["up_to_date"], true, "{again}");
    assert!(
        again["received_bytes"].as_u64().unwrap() > 10_000,
        "{again}"
    );
    // Not committed, not reset: still the same boot, still release 1.
    assert_eq!(boots(&t), boots_before, "{}", t.log());
    let info = ok(&uota(&["--json", "info", "--project", p]));
    assert_eq!(info["highest_release"], first["release"], "{info}");
    // The text output says so.
    let out = uota(&["full", "--project", p, "--version", "3.0.0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("up to date"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A changed file is not a no-op.
    std::fs::write(t.project.join("app/extra.py"), b"X = 1\n").unwrap();
    let changed = ok(&uota(&[
        "--json",
        "fast",
        "--project",
        p,
        "--version",
        "3.0.0",
    ]));
    assert_eq!(changed["up_to_date"], false, "{changed}");
    assert_eq!(changed["files_sent"], 1, "{changed}");
}

/// A TCP relay that passes at most `rate` bytes per second towards the
/// device: a slow WiFi link, so that a push lasts long enough to cancel.
async fn slow_relay(t: &TestDevice, rate: usize) -> (String, u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = unique_addr();
    // A small receive buffer, as a slow link has: the host's unsent bytes
    // stay on the host (where a reset discards them), not in the relay.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(format!("{host}:{port}").parse().unwrap())
        .unwrap();
    let listener = socket.listen(8).unwrap();
    let target = (t.host().to_string(), t.port());
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(device) = tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await
            else {
                continue;
            };
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut dr, mut dw) = device.into_split();
                let up = async {
                    let mut buf = vec![0u8; rate / 20];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) => return false,
                            Err(_) => return true, // reset by the host
                            Ok(n) => {
                                if dw.write_all(&buf[..n]).await.is_err() {
                                    return false;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut dr, &mut cw).await;
                    false
                };
                let reset = tokio::select! {
                    r = up => r,
                    r = down => r,
                };
                // Pass a reset on as a reset.
                if let Ok(device) = dr.reunite(dw) {
                    if reset {
                        device.set_zero_linger().ok();
                    }
                }
            });
        }
    });
    (host, port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_push_and_leaves_the_device_free() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    ok(&uota(&[
        "--json",
        "full",
        "--project",
        p,
        "--version",
        "1.0.0",
    ]));
    // 600 KB of incompressible files over a 200 KB/s link: about 3 s.
    for i in 0..12 {
        let bytes: Vec<u8> = (0..50_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i * 7919) >> 13) as u8)
            .collect();
        std::fs::write(t.project.join(format!("www/blob{i}.bin")), bytes).unwrap();
    }
    let (host, port, relay) = slow_relay(&t, 200_000).await;
    let port_s = port.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_uota"))
        .args([
            "full",
            "--project",
            p,
            "--version",
            "2.0.0",
            "--host",
            &host,
            "--port",
            &port_s,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the device has staged part of the release, then Ctrl-C.
    let stage = t.root.join("ota_stage");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&stage)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("www"))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the push never started staging");
        assert!(child.try_wait().unwrap().is_none(), "the push ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("push cancelled"), "{stderr}");
    assert!(stderr.contains("still runs 1.0.0"), "{stderr}");
    relay.abort();
    // The device is free at once (no `busy`), never committed 2.0.0, and
    // the next push of 2.0.0 resumes what was staged.
    let info = ok(&uota(&["--json", "info", "--project", p]));
    assert_eq!(info["version"], "1.0.0", "{info}");
    let out = uota(&["--json", "full", "--project", p, "--version", "2.0.0"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        t.log()
    );
    let report = json(&out);
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(
        ok(&uota(&["--json", "version", "--project", p]))["version"],
        "2.0.0"
    );
}
