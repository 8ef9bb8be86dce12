//! `uota sim`, run as a process: signals, a port already in use, bad
//! arguments refused before the banner, a too-small image, the flash size of
//! a folder-backed device, and `examples/demo.sh`.
#![cfg(all(feature = "cli", target_os = "linux"))]

mod common;

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any state may take to come about on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn uota() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uota"))
}

/// Poll `ready` until it holds; panic with `what` after [`PATIENCE`].
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on `host:port`.
fn answers(host: &str, port: u16) -> bool {
    let addr = (host, port).to_socket_addrs().unwrap().next().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Fields of `/proc/PID/stat` after the command name: state, ppid, pgrp, …
fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Gone, or a zombie nobody reaped yet (it runs nothing and holds no port).
fn is_gone(pid: i32) -> bool {
    proc_stat(pid).is_none_or(|f| matches!(f[0].as_str(), "Z" | "X"))
}

/// The live processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            proc_stat(p)
                .is_some_and(|f| f[1] == pid.to_string() && !matches!(f[0].as_str(), "Z" | "X"))
        })
        .collect()
}

fn kill(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) of a process (or group) this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A `uota sim` process with its own folder; its output goes to `log`.
struct Sim {
    child: Child,
    host: String,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Sim {
    /// `uota sim --root DIR/device --host H --port P` plus `extra`, from DIR
    /// (no project there); `own_group` puts it in a process group of its own,
    /// as a shell does for a command typed at a terminal.
    fn spawn(extra: &[&str], own_group: bool) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let (host, port) = common::unique_addr();
        let log = dir.path().join("sim.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = uota();
        cmd.arg("sim")
            .args(extra)
            .arg("--root")
            .arg(dir.path().join("device"))
            .args(["--host", &host, "--port", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if own_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().unwrap();
        Sim {
            child,
            host,
            port,
            dir,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the device answers; returns the interpreter's process id.
    fn wait_up(&mut self) -> i32 {
        let (host, port, pid) = (self.host.clone(), self.port, self.pid());
        let mut kids = Vec::new();
        wait_until("the virtual device (one interpreter) to answer", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("uota sim ended ({status}): {}", self.output());
            }
            kids = children(pid);
            kids.len() == 1 && answers(&host, port)
        });
        kids[0]
    }

    /// Wait for uota to exit; its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("uota sim to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// Wait until the interpreter is gone and the port no longer answers.
    fn wait_device_gone(&self, interpreter: i32) {
        wait_until("the interpreter to end", || is_gone(interpreter));
        wait_until("the port to close", || !answers(&self.host, self.port));
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `uota ARGS` from `dir`, killed (and the test failed) if it does not end in time.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let child = uota()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            // A process it left behind may hold the pipes open: do not wait for it.
            let (stdout, stderr) = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(out)) => text(&out),
                _ => Default::default(),
            };
            panic!("uota {args:?} did not end within {PATIENCE:?}: {stdout}{stderr}");
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// --- signals -----------------------------------------------------------------

fn a_signal_stops_the_interpreter(sig: libc::c_int) {
    let mut sim = Sim::spawn(&[], false);
    let interpreter = sim.wait_up();
    kill(sim.pid(), sig);
    let status = sim.wait_exit();
    assert!(status.success(), "{status}: {}", sim.output());
    sim.wait_device_gone(interpreter);
}

#[test]
fn sigterm_stops_uota_sim_and_its_interpreter() {
    a_signal_stops_the_interpreter(libc::SIGTERM);
}

#[test]
fn sighup_stops_uota_sim_and_its_interpreter() {
    a_signal_stops_the_interpreter(libc::SIGHUP);
}

#[test]
fn the_interpreter_dies_with_a_killed_uota_sim() {
    let mut sim = Sim::spawn(&[], false);
    let interpreter = sim.wait_up();
    kill(sim.pid(), libc::SIGKILL);
    sim.wait_exit();
    sim.wait_device_gone(interpreter);
}

#[test]
fn ctrl_c_at_a_terminal_stops_the_device_without_a_traceback() {
    let mut sim = Sim::spawn(&[], true);
    let interpreter = sim.wait_up();
    // The terminal sends SIGINT to the whole foreground process group.
    kill(-sim.pid(), libc::SIGINT);
    let status = sim.wait_exit();
    assert!(status.success(), "{status}: {}", sim.output());
    sim.wait_device_gone(interpreter);
    let out = sim.output();
    assert!(
        !out.contains("Traceback") && !out.contains("KeyboardInterrupt"),
        "{out}"
    );
}

#[test]
fn sigterm_stops_a_serial_sim_and_its_interpreter() {
    let mut sim = Sim::spawn(&["--serial"], false);
    wait_until("the serial port's path", || {
        if let Ok(Some(status)) = sim.child.try_wait() {
            panic!("uota sim --serial ended ({status}): {}", sim.output());
        }
        sim.output().contains("/dev/pts/")
    });
    let kids = children(sim.pid());
    assert_eq!(kids.len(), 1, "one interpreter: {kids:?}");
    kill(sim.pid(), libc::SIGTERM);
    let status = sim.wait_exit();
    assert!(status.success(), "{status}: {}", sim.output());
    wait_until("the interpreter to end", || is_gone(kids[0]));
}

// --- a port already in use ---------------------------------------------------

#[test]
fn a_port_in_use_is_a_clear_error_at_once() {
    let (host, port) = common::unique_addr();
    let _taken = TcpListener::bind((host.as_str(), port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for serial in [false, true] {
        let mut args = vec!["sim", "--root", "device", "--host", &host];
        let port = port.to_string();
        args.extend(["--port", &port]);
        if serial {
            args.push("--serial");
        }
        let out = run_in(dir.path(), &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!("{host}:{port} is already in use")),
            "{stderr}"
        );
        assert!(stdout.is_empty(), "no banner: {stdout}");
    }
}

#[test]
fn a_port_taken_while_the_device_restarts_stops_uota_sim() {
    let mut sim = Sim::spawn(&[], false);
    let mut interpreter = sim.wait_up();
    // Kill the interpreter (the supervisor restarts it, as after a crash)
    // and take its port in between; should the new interpreter win the
    // race, it answers again and the test tries anew.
    let mut taken = None;
    for _ in 0..20 {
        kill(interpreter, libc::SIGKILL);
        // Until it has exited, its socket still takes connections.
        wait_until("the killed interpreter to end", || is_gone(interpreter));
        let deadline = Instant::now() + PATIENCE;
        while taken.is_none() && Instant::now() < deadline {
            match TcpListener::bind((sim.host.as_str(), sim.port)) {
                Ok(l) => taken = Some(l),
                Err(_) if answers(&sim.host, sim.port) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        if taken.is_some() {
            break;
        }
        interpreter = sim.wait_up();
    }
    assert!(
        taken.is_some(),
        "never took the port while the device restarted"
    );
    let status = sim.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", sim.output());
    let out = sim.output();
    assert!(
        out.contains(&format!("{} is already in use", sim.addr())),
        "{out}"
    );
    wait_until("the interpreter to end", || children(sim.pid()).is_empty());
}

// --- refusals before the banner ----------------------------------------------

#[test]
fn a_non_loopback_host_is_refused_before_the_banner() {
    // "Listen everywhere" and a machine name: both would reach past loopback.
    for host in ["0.0.0.0", "device.example"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_in(dir.path(), &["sim", "--root", "device", "--host", host]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{host}: {stdout}{stderr}");
        assert!(stderr.contains("loopback"), "{host}: {stderr}");
        assert!(stdout.is_empty(), "{host}: no banner: {stdout}");
        assert!(
            !dir.path().join("device").exists(),
            "{host}: nothing provisioned"
        );
    }
}

#[test]
fn a_too_small_image_says_how_much_the_runtime_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = common::unique_addr();
    let out = run_in(
        dir.path(),
        &[
            "sim",
            "--image",
            "x.img",
            "--image-size",
            "64k",
            "--host",
            &host,
            "--port",
            &port.to_string(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("too small for the uota runtime"),
        "{stderr}"
    );
    assert!(stderr.contains("needs about"), "{stderr}");
    assert!(!stderr.contains("installing the runtime"), "{stderr}");
    assert!(stdout.is_empty(), "no banner: {stdout}");
    assert!(
        !dir.path().join("x.img").exists(),
        "no half-made image left"
    );
}

// --- the flash size of a folder-backed device --------------------------------

fn info(dir: &Path, host: &str, port: u16) -> serde_json::Value {
    let out = run_in(
        dir,
        &[
            "--json",
            "info",
            "--host",
            host,
            "--port",
            &port.to_string(),
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_folder_device_has_a_board_sized_flash() {
    // Default: an ESP32's filesystem partition.
    let mut sim = Sim::spawn(&[], false);
    sim.wait_up();
    let free = info(sim.dir.path(), &sim.host, sim.port)["fs_free"]
        .as_u64()
        .unwrap();
    assert!(free > 0 && free < 1_441_792, "fs_free {free}");
    drop(sim);

    // --flash-size: a release bigger than the free flash is refused.
    let mut sim = Sim::spawn(&["--flash-size", "512k"], false);
    sim.wait_up();
    let free = info(sim.dir.path(), &sim.host, sim.port)["fs_free"]
        .as_u64()
        .unwrap();
    assert!(free > 0 && free < 512 * 1024, "fs_free {free}");
    let project = sim.dir.path().join("project");
    common::copy_tree(&common::repo().join("examples/starter"), &project);
    let cfg_path = project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hostname"] = sim.host.clone().into();
    cfg["port"] = sim.port.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // Incompressible bytes, more than the free flash.
    let mut big = Vec::with_capacity(free as usize + 65536);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < free as usize + 65536 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(project.join("app/big.bin"), big).unwrap();
    let out = run_in(&project, &["full", "--project", project.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("no_space"), "{stdout}{stderr}");
}

// --- examples/demo.sh ----------------------------------------------------------

fn demo(host: &str, port: u16) -> Output {
    Command::new("bash")
        .arg(common::repo().join("examples/demo.sh"))
        .env("UOTA_BIN", env!("CARGO_BIN_EXE_uota"))
        .env("UOTA_DEMO_HOST", host)
        .env("UOTA_DEMO_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_demo_checks_what_it_claims_and_runs_twice_in_a_row() {
    let (host, port) = common::unique_addr();
    for run in 1..=2 {
        let out = demo(&host, port);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "run {run}: {stdout}{stderr}");
        assert!(
            stdout.contains("version after: 1.0.0"),
            "run {run}: {stdout}"
        );
        assert!(
            stdout.contains("app state: version 1.0.0, start 1"),
            "run {run}: {stdout}"
        );
        // It left no device behind.
        assert!(!answers(&host, port), "run {run}: a device still answers");
    }
    // Its port taken: a clear failure, not a push to whatever listens there.
    let _taken = TcpListener::bind((host.as_str(), port)).unwrap();
    let out = demo(&host, port);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("{host}:{port}")) && stderr.contains("in use"),
        "{stdout}{stderr}"
    );
}

// --- inside a project ---------------------------------------------------------

#[test]
fn inside_a_project_sim_listens_where_the_project_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = common::unique_addr();
    let out = run_in(dir.path(), &["init"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // The project points at a loopback address of this test's own.
    let cfg_path = dir.path().join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hostname"] = host.clone().into();
    cfg["port"] = port.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // `uota sim --root ./vdev`, no address: the project's.
    let log = dir.path().join("sim.log");
    let sink = std::fs::File::create(&log).unwrap();
    let mut child = uota()
        .args(["sim", "--root", "./vdev"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(sink.try_clone().unwrap())
        .stderr(sink)
        .spawn()
        .unwrap();
    wait_until("the project's device to answer", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        answers(&host, port)
    });
    // The project's commands reach it as they are, authenticated and signed.
    let out = run_in(dir.path(), &["--json", "full"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run_in(dir.path(), &["--json", "info"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], "1.0.0", "{info}");
    assert_eq!(info["signing_key"], true, "{info}");
    assert_eq!(info["password"], true, "{info}");
    kill(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
    wait_until("the port to close", || !answers(&host, port));
    // Secrets given for an existing device are not applied: it says so.
    let again = uota()
        .args(["sim", "--root", "./vdev", "--signing-key", "another-key"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the device to answer again", || answers(&host, port));
    kill(again.id() as i32, libc::SIGTERM);
    let out = again.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
}
