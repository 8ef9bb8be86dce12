//! Fleets against real virtual devices: discovery, rollouts in waves with
//! health gates and thresholds, retries, refusals, resume after a crash,
//! Ctrl-C, status, and the reports.
#![cfg(all(unix, feature = "cli"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use uota::auth::{FleetKey, SigningKey};
use uota::sim::{SimOptions, VirtualDevice};

const FLEET_KEY: &str = "fleet-test-key-0123456789abcdef";

/// Virtual devices on `base.1` … `base.N`, all on one port, and a project
/// whose inventory lists them as d01 … dNN with their ids.
struct Fleet {
    devices: Vec<VirtualDevice>,
    base: String,
    port: u16,
    project: PathBuf,
    _tmp: tempfile::TempDir,
}

/// What a device of a test fleet is set up with.
#[derive(Clone, Default)]
struct Special {
    /// Provision it with this key instead of the one the fleet key derives.
    key: Option<&'static str>,
}

fn base_for(test: u8) -> String {
    format!("127.{}.{}", 100 + test, std::process::id() % 250 + 1)
}

/// A port free on every address of the fleet.
fn common_port(base: &str, n: usize) -> u16 {
    'search: for _ in 0..50 {
        let first = std::net::TcpListener::bind((format!("{base}.1").as_str(), 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        drop(first);
        for i in 1..=n + 2 {
            if std::net::TcpListener::bind((format!("{base}.{i}").as_str(), port)).is_err() {
                continue 'search;
            }
        }
        return port;
    }
    panic!("no port free on all of {base}.1-{n}");
}

async fn fleet(test: u8, n: usize, special: &[(usize, Special)]) -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_for(test);
    let port = common_port(&base, n);
    let mut starting = tokio::task::JoinSet::new();
    for i in 1..=n {
        let id = format!("dev{i:02}");
        let host = format!("{base}.{i}");
        let mut opts = SimOptions::folder(tmp.path().join(format!("d{i:02}")), &host, port);
        let own = special
            .iter()
            .find(|(k, _)| *k == i)
            .map(|(_, s)| s.clone());
        opts.signing_key = Some(match own.and_then(|s| s.key) {
            Some(k) => SigningKey::new(k),
            None => FleetKey::new(FLEET_KEY).derive(&id),
        });
        opts.env.push(("UOTA_SIM_ID".into(), id));
        opts.log = Some(tmp.path().join(format!("d{i:02}.log")));
        starting.spawn(async move { (i, VirtualDevice::start(opts).await) });
    }
    let mut devices: Vec<(usize, VirtualDevice)> = Vec::new();
    while let Some(joined) = starting.join_next().await {
        let (i, dev) = joined.unwrap();
        devices.push((i, dev.unwrap_or_else(|e| panic!("device {i} starts: {e}"))));
    }
    devices.sort_by_key(|(i, _)| *i);
    let project = tmp.path().join("project");
    common::copy_tree(&common::repo().join("examples/starter"), &project);
    set_config(&project, "hostname", json!(format!("{base}.1")));
    set_config(&project, "port", json!(port));
    // A release that runs healthy for a second is confirmed.
    set_config(&project, "confirmAfter", json!(1));
    set_config(&project, "watchdog", json!(3));
    std::fs::write(
        project.join("config/.ota.secrets.json"),
        json!({"fleetKey": FLEET_KEY}).to_string(),
    )
    .unwrap();
    let inventory: Vec<Value> = (1..=n)
        .map(|i| json!({"name": format!("d{i:02}"), "host": format!("{base}.{i}"), "port": port, "id": format!("dev{i:02}"), "tags": if i == 1 { vec!["canary"] } else { vec![] }}))
        .collect();
    write_inventory(&project, &inventory);
    Fleet {
        devices: devices.into_iter().map(|(_, d)| d).collect(),
        base,
        port,
        project,
        _tmp: tmp,
    }
}

fn write_inventory(project: &Path, devices: &[Value]) {
    std::fs::write(
        project.join("config/fleet.json"),
        serde_json::to_vec_pretty(&json!({ "devices": devices })).unwrap(),
    )
    .unwrap();
}

fn set_config(project: &Path, key: &str, value: Value) {
    let path = project.join("config/ota.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

fn break_the_app(project: &Path) {
    std::fs::write(
        project.join("main.py"),
        "async def run():\n    raise ValueError('broken release')\n",
    )
    .unwrap();
}

impl Fleet {
    fn cidr(&self) -> String {
        format!("{}.0/27", self.base)
    }

    /// `uota ARGS --project P` to its end (without blocking the runtime
    /// that supervises the virtual devices).
    async fn uota(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run uota")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_uota"));
        c.args(args)
            .arg("--project")
            .arg(&self.project)
            .env("UOTA_LOOPBACK_ONLY", "1")
            .kill_on_drop(true);
        c
    }

    /// Every device's hello: (version, release number).
    async fn hellos(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for d in &self.devices {
            let found = uota::fleet::discover::probe(d.host(), d.port(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{} answers: {e}", d.host()));
            out.push((
                found.version.unwrap_or_default(),
                found.release.unwrap_or(0),
            ));
        }
        out
    }

    async fn versions(&self) -> Vec<String> {
        self.hellos().await.into_iter().map(|(v, _)| v).collect()
    }
}

fn statuses(report: &Value) -> Vec<String> {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

fn device<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

fn text(out: &Output) -> String {
    common::cli::text(out)
}

fn report_of(out: &Output) -> Value {
    common::cli::json(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_exactly_the_devices_and_saves_an_inventory() {
    let f = fleet(1, 20, &[]).await;
    // Something that listens on the port but is no device: a web server.
    let impostor_addr = format!("{}.21", f.base);
    let impostor = tokio::net::TcpListener::bind((impostor_addr.as_str(), f.port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = impostor.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
        }
    });
    std::fs::remove_file(f.project.join("config/fleet.json")).unwrap();
    let port = f.port.to_string();
    let out = f
        .uota(&[
            "--json",
            "list",
            "--scan",
            &f.cidr(),
            "--port",
            &port,
            "--save",
        ])
        .await;
    let v = common::cli::ok(&out);
    let found = v["devices"].as_array().unwrap();
    let mut hosts: Vec<&str> = found.iter().map(|d| d["host"].as_str().unwrap()).collect();
    hosts.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("{}.{i}", f.base)).collect();
    expected.sort();
    assert_eq!(hosts, expected, "{v}");
    for d in found {
        assert_eq!(d["protocol"], "uota", "{d}");
        assert!(d["id"].as_str().unwrap().starts_with("dev"), "{d}");
        assert_eq!(d["state"], "confirmed", "{d}");
        assert!(d["runtime"].is_string() && d["version"].is_string(), "{d}");
    }
    assert_eq!(v["saved"]["added"].as_array().unwrap().len(), 20, "{v}");
    let inv = uota::fleet::Inventory::load(&f.project.join("config/fleet.json")).unwrap();
    assert_eq!(inv.devices.len(), 20);
    assert!(inv.devices.iter().all(|d| d.id.is_some()));
    // Listing the saved inventory probes each entry.
    let out = f.uota(&["--json", "list"]).await;
    let v = common::cli::ok(&out);
    assert_eq!(v["devices"].as_array().unwrap().len(), 20, "{v}");
    assert!(
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["error"].is_null()),
        "{v}"
    );
    // A second scan with --save adds nothing.
    let out = f
        .uota(&[
            "--json",
            "list",
            "--scan",
            &f.cidr(),
            "--port",
            &port,
            "--save",
        ])
        .await;
    let v = common::cli::ok(&out);
    assert_eq!(v["saved"]["added"], json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_in_three_waves_updates_every_device_and_reports_it() {
    let f = fleet(2, 20, &[]).await;
    let before = f.hellos().await;
    let junit = f.project.join("report.xml");
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "2.0.0",
            "--groups",
            "1,10%,100%",
            "--concurrency",
            "8",
            "--max-failures",
            "0",
            "--health-wait",
            "60",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = report_of(&out);
    assert_eq!(report["outcome"], "success");
    assert_eq!(statuses(&report), vec!["updated"; 20], "{report}");
    let groups: Vec<u64> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["devices"].as_u64().unwrap())
        .collect();
    assert_eq!(groups, [1, 1, 18], "{report}");
    for d in report["devices"].as_array().unwrap() {
        assert_eq!(d["to"], "2.0.0");
        assert_eq!(d["attempts"], 1, "{d}");
        // The release's files (the starter project is some 3 KB) crossed the link.
        assert!(d["bytes"].as_u64().unwrap() > 2000, "{d}");
    }
    assert_eq!(device(&report, "d01")["group"], 1);
    let after = f.hellos().await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.0, "2.0.0");
        assert_eq!(a.1, b.1 + 1, "one new release per device");
    }
    // The JUnit file: three suites, twenty cases, no failure.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 20, "{xml}");
    assert!(xml.contains("tests=\"20\" failures=\"0\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    // The same release again: nothing to do on any device.
    let out = f
        .uota(&["--json", "full", "--all", "--version", "2.0.0"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(statuses(&report_of(&out)), vec!["unchanged"; 20]);
    // Status of every device, at once.
    let out = f.uota(&["--json", "status", "--all"]).await;
    let v = common::cli::ok(&out);
    for d in v["devices"].as_array().unwrap() {
        assert_eq!(d["reachable"], true, "{d}");
        assert_eq!(d["version"], "2.0.0", "{d}");
        assert_eq!(d["state"], "confirmed", "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_rollout_before_the_next_wave() {
    let f = fleet(3, 6, &[]).await;
    break_the_app(&f.project);
    let junit = f.project.join("report.xml");
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "6.6.6",
            "--groups",
            "1,100%",
            "--max-failures",
            "0",
            "--health-wait",
            "60",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    let report = report_of(&out);
    assert_eq!(report["outcome"], "stopped", "{report}");
    let canary = device(&report, "d01");
    assert_eq!(canary["status"], "rolled_back", "{report}");
    assert!(
        canary["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rolled"),
        "{canary}"
    );
    assert_eq!(&statuses(&report)[1..], vec!["not_reached"; 5], "{report}");
    // The canary runs its previous release again; the others were never touched.
    let versions = f.versions().await;
    assert!(versions.iter().all(|v| v != "6.6.6"), "{versions:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("skipped=\"5\""),
        "{xml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_unreachable_devices_and_other_ids_fail_alone() {
    let f = fleet(
        4,
        4,
        &[(
            2,
            Special {
                key: Some("not-the-fleet-key"),
            },
        )],
    )
    .await;
    let mut inventory: Vec<Value> = (1..=4)
        .map(|i| json!({"name": format!("d{i:02}"), "host": format!("{}.{i}", f.base), "port": f.port, "id": format!("dev{i:02}")}))
        .collect();
    // d03 is expected to be another device than the one at its address.
    inventory[2]["id"] = json!("someone-else");
    // Nothing listens at .9.
    inventory.push(json!({"name": "gone", "host": format!("{}.9", f.base), "port": f.port}));
    write_inventory(&f.project, &inventory);
    let started = std::time::Instant::now();
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "3.0.0",
            "--retries",
            "2",
            "--retry-backoff",
            "0.2",
        ])
        .await;
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(r["outcome"], "devices_failed");
    assert_eq!(device(&r, "d01")["status"], "updated", "{r}");
    assert_eq!(device(&r, "d04")["status"], "updated", "{r}");
    let wrong_key = device(&r, "d02");
    assert_eq!(wrong_key["status"], "failed");
    assert_eq!(
        wrong_key["error"]["kind"], "SignatureMismatch",
        "{wrong_key}"
    );
    assert_eq!(wrong_key["attempts"], 1, "a refused release is not retried");
    let other = device(&r, "d03");
    assert_eq!(other["error"]["kind"], "WrongDevice", "{other}");
    assert_eq!(other["attempts"], 1);
    let gone = device(&r, "gone");
    assert_eq!(gone["status"], "failed");
    assert_eq!(gone["error"]["kind"], "Transport", "{gone}");
    assert_eq!(gone["attempts"], 3, "retried twice: {gone}");
    eprintln!("rollout took {:?}", started.elapsed());
    let versions = f.versions().await;
    assert_eq!(versions[0], "3.0.0");
    assert_ne!(versions[1], "3.0.0");
    assert_ne!(versions[2], "3.0.0");
    assert_eq!(versions[3], "3.0.0");
}

/// Wait until the rollout's state file lists at least `n` devices; its path.
async fn wait_state(project: &Path, n: usize) -> PathBuf {
    let dir = project.join(".uota/rollouts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            // Only the state files: a `.tmp*` beside them is a write in
            // flight, renamed away a moment later.
            for e in entries.flatten() {
                if e.path().extension().is_none_or(|x| x != "json") {
                    continue;
                }
                if let Ok(st) = uota::fleet::RolloutState::load(&e.path()) {
                    if st.devices.len() >= n {
                        return e.path();
                    }
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no state with {n} devices"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_mid_way_resumes_and_updates_every_device_once() {
    let f = fleet(5, 12, &[]).await;
    let before = f.hellos().await;
    let mut child = f
        .command(&[
            "--json",
            "full",
            "--all",
            "--version",
            "4.0.0",
            "--concurrency",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = wait_state(&f.project, 3).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let partial = uota::fleet::RolloutState::load(&state).unwrap();
    assert!(!partial.finished);
    assert!(partial.devices.len() < 12, "killed before the end");
    let out = f
        .uota(&["--json", "full", "--all", "--version", "4.0.0", "--resume"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(r["id"], partial.id, "the same rollout");
    for d in r["devices"].as_array().unwrap() {
        let s = d["status"].as_str().unwrap();
        // A device in flight at the kill may have committed already: the
        // resumed push then finds it up to date.
        assert!(s == "updated" || s == "unchanged", "{d}");
    }
    for done in &partial.devices {
        assert_eq!(
            device(&r, &done.name)["seconds"],
            json!(done.seconds),
            "left alone"
        );
    }
    let after = f.hellos().await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.0, "4.0.0");
        assert_eq!(a.1, b.1 + 1, "updated exactly once");
    }
    assert!(uota::fleet::RolloutState::load(&state).unwrap().finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_starts_no_further_device_and_writes_the_state() {
    let f = fleet(6, 10, &[]).await;
    let child = f
        .command(&[
            "--json",
            "full",
            "--all",
            "--version",
            "5.0.0",
            "--concurrency",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = wait_state(&f.project, 2).await;
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(r["outcome"], "cancelled");
    let st = statuses(&r);
    let updated = st.iter().filter(|s| *s == "updated").count();
    let not_reached = st.iter().filter(|s| *s == "not_reached").count();
    assert!(updated >= 2 && not_reached >= 1, "{st:?}");
    assert_eq!(updated + not_reached, 10, "{st:?}");
    // Devices run the old or the new release whole, as the report says.
    let versions = f.versions().await;
    for (s, v) in st.iter().zip(&versions) {
        assert_eq!(s == "updated", v == "5.0.0", "{st:?} {versions:?}");
    }
    let saved = uota::fleet::RolloutState::load(&state).unwrap();
    assert!(!saved.finished);
    assert_eq!(saved.devices.len(), updated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inventories_selections_and_ranges_are_refused_before_any_push() {
    let f = fleet(7, 2, &[]).await;
    let before = f.versions().await;
    let inv = f.project.join("config/fleet.json");
    let good = std::fs::read(&inv).unwrap();
    let refused = |out: &Output, says: &str| {
        assert!(!out.status.success(), "{}", text(out));
        let v = report_of(out);
        assert_eq!(v["ok"], false, "{v}");
        let msg = v["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{says:?} not in {msg}");
    };
    std::fs::write(&inv, "{\"devices\": [{\"name\": \"x\"}]}").unwrap();
    refused(&f.uota(&["--json", "full", "--all"]).await, "neither");
    std::fs::write(&inv, "not json").unwrap();
    refused(
        &f.uota(&["--json", "full", "--all"]).await,
        "not a fleet inventory",
    );
    std::fs::remove_file(&inv).unwrap();
    refused(
        &f.uota(&["--json", "full", "--all"]).await,
        "no fleet inventory",
    );
    std::fs::write(&inv, &good).unwrap();
    refused(
        &f.uota(&["--json", "full", "--all", "--select", "tag:nope"])
            .await,
        "matches none",
    );
    refused(
        &f.uota(&["--json", "full", "--all", "--groups", "1,x"])
            .await,
        "--groups",
    );
    refused(
        &f.uota(&["--json", "full", "--all", "--max-failures", "ten"])
            .await,
        "--max-failures",
    );
    refused(
        &f.uota(&["--json", "list", "--scan", "10.0.0.0/24"]).await,
        "not a loopback address",
    );
    refused(
        &f.uota(&["--json", "list", "--scan", "127.0.0.0/8"]).await,
        "more than a /16",
    );
    refused(
        &f.uota(&["--json", "full", "--all", "--scan", "192.168.7.0/24"])
            .await,
        "not a loopback address",
    );
    refused(
        &f.uota(&["--json", "full", "--all", "--resume"]).await,
        "no unfinished rollout",
    );
    assert_eq!(f.versions().await, before, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_wait_catches_a_late_failure_and_a_release_never_confirmed() {
    let f = fleet(8, 2, &[]).await;
    // Healthy at first; fails 1.5 s after boot, inside a 5 s confirmation
    // window: the device is back on the new release when the push ends, and
    // rolls back while the rollout waits for its confirmation.
    set_config(&f.project, "confirmAfter", json!(5));
    std::fs::write(
        f.project.join("main.py"),
        "import asyncio\n\nasync def run():\n    await asyncio.sleep(1.5)\n    raise ValueError('late failure')\n",
    )
    .unwrap();
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "7.0.0",
            "--health-wait",
            "60",
            "--select",
            "d01",
        ])
        .await;
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(statuses(&r), ["rolled_back"], "{r}");
    eprintln!("late failure: {}", r["devices"][0]["error"]["message"]);
    assert_ne!(f.versions().await[0], "7.0.0");
    // A release that is never confirmed within the health wait fails the device.
    set_config(&f.project, "confirmAfter", json!(600));
    std::fs::copy(
        common::repo().join("examples/starter/main.py"),
        f.project.join("main.py"),
    )
    .unwrap();
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "7.0.1",
            "--health-wait",
            "2",
            "--select",
            "d02",
        ])
        .await;
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let r = report_of(&out);
    let d = device(&r, "d02");
    assert_eq!(d["status"], "failed", "{r}");
    assert_eq!(d["error"]["kind"], "Timeout", "{d}");
    assert!(
        d["error"]["message"].as_str().unwrap().contains("pending"),
        "{d}"
    );
}

/// Forward every connection to `listen` on to `to` (a second address for one device).
async fn forwarder(listen: (String, u16), to: (String, u16)) {
    let l = tokio::net::TcpListener::bind((listen.0.as_str(), listen.1))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect((to.0.as_str(), to.1)).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_that_reach_one_device_push_it_once() {
    let f = fleet(9, 1, &[]).await;
    let before = f.hellos().await;
    forwarder(
        (format!("{}.5", f.base), f.port),
        (format!("{}.1", f.base), f.port),
    )
    .await;
    write_inventory(
        &f.project,
        &[
            json!({"name": "d01", "host": format!("{}.1", f.base), "port": f.port}),
            json!({"name": "alias", "host": format!("{}.5", f.base), "port": f.port}),
        ],
    );
    let out = f
        .uota(&[
            "--json",
            "full",
            "--all",
            "--version",
            "8.0.0",
            "--concurrency",
            "1",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(statuses(&r), ["updated", "skipped"], "{r}");
    let alias = device(&r, "alias");
    assert!(
        alias["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"d01\""),
        "{alias}"
    );
    assert_eq!(
        f.hellos().await[0].1,
        before[0].1 + 1,
        "one release, not two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_on_usb_serial_is_rolled_out_to_beside_wifi_devices() {
    let f = fleet(10, 2, &[]).await;
    // A board on a serial port (a pseudo-terminal), provisioned with its own key.
    let root = f.project.parent().unwrap().join("serial-board");
    let (host, port) = common::unique_addr();
    let mut sim = SimOptions::folder(&root, &host, port);
    sim.signing_key = Some(FleetKey::new(FLEET_KEY).derive("board-usb"));
    sim.env.push(("UOTA_SIM_ID".into(), "board-usb".into()));
    uota::sim::provision(&sim).await.unwrap();
    let board = uota::sim::VirtualSerialDevice::start(uota::sim::SerialSimOptions::booting(&sim))
        .await
        .unwrap();
    let mut inventory: Vec<Value> = (1..=2)
        .map(|i| json!({"name": format!("d{i:02}"), "host": format!("{}.{i}", f.base), "port": f.port, "id": format!("dev{i:02}")}))
        .collect();
    inventory.push(
        json!({"name": "usb", "serial": board.path().display().to_string(), "id": "board-usb"}),
    );
    write_inventory(&f.project, &inventory);
    let out = f
        .uota(&["--json", "full", "--all", "--version", "9.0.0"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(statuses(&r), ["updated", "updated", "updated"], "{r}");
    assert_eq!(device(&r, "usb")["id"], "board-usb");
    // The board runs the release: its version file says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = std::fs::read_to_string(root.join("ota_version.json")).unwrap_or_default();
        if v.contains("9.0.0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the board never installed 9.0.0: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    board.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remoteio_call_reaches_every_device_of_the_fleet() {
    let f = fleet(11, 3, &[]).await;
    let out = f
        .uota(&["--json", "remoteio", "call", "ping", "--all"])
        .await;
    let v = common::cli::ok(&out);
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3, "{v}");
    for d in devices {
        assert_eq!(d["ok"], true, "{d}");
        assert_eq!(d["result"], "pong", "{d}");
    }
    // One device down: its line says why, the others answer, exit 10.
    let mut inventory: Vec<Value> = (1..=3)
        .map(|i| json!({"name": format!("d{i:02}"), "host": format!("{}.{i}", f.base), "port": f.port}))
        .collect();
    inventory.push(json!({"name": "gone", "host": format!("{}.9", f.base), "port": f.port}));
    write_inventory(&f.project, &inventory);
    let out = f
        .uota(&[
            "--json",
            "remoteio",
            "call",
            "version",
            "--all",
            "--call-timeout",
            "2",
        ])
        .await;
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let v = report_of(&out);
    let gone = device(&v, "gone");
    assert_eq!(gone["ok"], false, "{v}");
    assert_eq!(device(&v, "d01")["ok"], true, "{v}");
}
