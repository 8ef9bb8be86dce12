//! What the `uota` command says when something is off: clear messages,
//! machine-readable output that stays machine-readable, no panics.
#![cfg(feature = "cli")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::cli::{json, text, uota};
use common::{start, unique_addr, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gives_a_number_and_a_sentence() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    let out = uota(&["--json", "ping", "--project", p]);
    assert!(json(&out)["pong_ms"].is_f64(), "{}", text(&out));
    let out = uota(&["ping", "--project", p]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with("pong from") && said.trim_end().ends_with(" ms"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_output_quietly() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    // More listing than a pipe holds (64 KiB), so that writing it fails.
    let many = t.root.join("data/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..1500 {
        let name = format!("a-file-with-a-rather-long-name-for-the-listing-{i:05}.json");
        std::fs::write(many.join(name), b"").unwrap();
    }
    // `uota ls | head -c 1`: the reader leaves after one byte.
    let mut child = Command::new(env!("CARGO_BIN_EXE_uota"))
        .args(["ls", "--project", p, "/data/many"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_port_number_out_of_range_is_not_a_serial_port() {
    let out = uota(&["version", "--host", "127.0.0.1", "--port", "99999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("--port 99999") && said.contains("65535"),
        "{said}"
    );
    assert!(!said.to_lowercase().contains("serial port /"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_on_the_port_is_named_as_such() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = unique_addr();
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let port_s = port.to_string();
    let out =
        tokio::task::spawn_blocking(move || uota(&["version", "--host", &host, "--port", &port_s]))
            .await
            .unwrap();
    server.abort();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("web server"), "{said}");
}

#[test]
fn usage_errors_are_json_under_json() {
    let out = uota(&["--json", "full", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["kind"], "Usage", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-flag"),
        "{v}"
    );
    // Without --json it stays clap's text.
    let out = uota(&["full", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_wipe_the_device_reports_no_release_version() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    assert!(uota(&["full", "--project", p, "--version", "7.0.0"])
        .status
        .success());
    assert_eq!(
        json(&uota(&["--json", "version", "--project", p]))["version"],
        "7.0.0"
    );
    assert!(uota(&["wipe", "--project", p]).status.success());
    assert_eq!(
        json(&uota(&["--json", "version", "--project", p]))["version"],
        "unknown"
    );
    // And the next push of 7.0.0 is a real push, not "up to date".
    let again = json(&uota(&[
        "--json",
        "full",
        "--project",
        p,
        "--version",
        "7.0.0",
    ]));
    assert_eq!(again["up_to_date"], false, "{again}");
    assert!(again["files_sent"].as_u64().unwrap() > 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_mistakes_are_said() {
    let t = start(Setup::default()).await;
    let p = t.project.to_str().unwrap();
    // A literal path in fastOtaFiles that matches nothing (a typo).
    let cfg_path = t.project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["fastOtaFiles"]
        .as_array_mut()
        .unwrap()
        .push("app/countr.py".into());
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // A signing key in the project, a device without one.
    std::fs::write(
        t.project.join("config/.ota.secrets.json"),
        br#"{"signingKey": "a-key-the-device-lacks"}"#,
    )
    .unwrap();
    let out = uota(&["fast", "--project", p, "--version", "1.0.1"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("app/countr.py") && stderr.contains("matches no file"),
        "{stderr}"
    );
    assert!(stderr.contains("has no signing key"), "{stderr}");
    // --strict makes the typo an error, before anything is sent.
    let out = uota(&["fast", "--project", p, "--version", "1.0.2", "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("app/countr.py"), "{}", text(&out));
    assert_eq!(
        json(&uota(&["--json", "version", "--project", p]))["version"],
        "1.0.1"
    );
}
