//! Small boards: the runtime as `.mpy` on littlefs takes pushes of a
//! 200-file project on a board-sized heap, and running out of heap at any
//! phase of a push leaves the device on its previous release (or, after the
//! commit point, on the new one), never unable to boot.

mod common;

use std::path::Path;

use common::{sha256_hex, start, Setup, TestDevice};
use uota::sim::RuntimeCode;
use uota::{Error, PushMode};

/// 200 files of about 10 KB of Python source under app/.
fn make_200_files(project: &Path) {
    let app = project.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for i in 0..199 {
        let mut text = String::new();
        let mut n = 0u64;
        while text.len() < 10 * 1024 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407 + i);
            text.push_str(&format!(
                "def f_{i}_{}(x):\n    return x * {} + {}\n",
                text.len(),
                n % 1000,
                (n >> 20) % 100
            ));
        }
        std::fs::write(app.join(format!("m{i:03}.py")), text).unwrap();
    }
}

/// The files (path, sha256) a full push of the project sends now.
fn release_files(t: &TestDevice) -> Vec<(String, String)> {
    let (_, bundle) = common::project_bundle(&t.project, PushMode::Full, "0");
    let files = &bundle.manifest().files;
    files
        .iter()
        .map(|f| (f.path.clone(), f.sha256_hex()))
        .collect()
}

/// The device runs `version` and holds `files`, byte for byte.
async fn assert_release(t: &TestDevice, version: &str, files: &[(String, String)]) {
    let mut dev = t.wait_version(version).await;
    for (path, sha) in files {
        let got = dev.get(path).await.unwrap();
        assert_eq!(&sha256_hex(&got), sha, "{path}");
    }
}

/// Every file of the project's full push is on the device, byte for byte.
async fn assert_installed(t: &TestDevice, version: &str) {
    assert_release(t, version, &release_files(t)).await;
}

#[tokio::test]
async fn a_compiled_runtime_on_littlefs_takes_full_and_delta_pushes_of_200_files_at_192k() {
    let t = start(Setup {
        image: true,
        image_size: Some(8 * 1024 * 1024),
        runtime_code: RuntimeCode::Bytecode,
        heap_size: Some("192k"),
        ..Setup::default()
    })
    .await;
    make_200_files(&t.project);
    t.push_project("1.0.1").await.expect("full push at 192k");
    assert_installed(&t, "1.0.1").await;
    let one = t.project.join("app/m000.py");
    let mut text = std::fs::read_to_string(&one).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&one, text).unwrap();
    let report = t.push_project("1.0.2").await.expect("delta push at 192k");
    assert_eq!(report.files_sent, 1, "{report:?}");
    assert_installed(&t, "1.0.2").await;
    let info = t.connect().await.info().await.unwrap();
    assert!(
        info.extra
            .get("mem_idle")
            .and_then(|v| v.as_u64())
            .is_some(),
        "info reports the idle free heap: {info:?}"
    );
}

/// The device with release 1.0.0 installed (its files returned), its fault
/// file armed at `point`, and the project changed.
async fn armed_device(point: &str) -> (TestDevice, Vec<(String, String)>) {
    let t = start(Setup {
        env: vec![("UOTA_SIM_FAULT", "/.sim_fault")],
        ..Setup::default()
    })
    .await;
    t.push_project("1.0.0").await.expect("first push");
    let first = release_files(&t);
    assert_release(&t, "1.0.0", &first).await;
    std::fs::write(t.project.join("app/extra.py"), "X = 1\n").unwrap();
    std::fs::write(t.root.join(".sim_fault"), point).unwrap();
    (t, first)
}

async fn no_memory_keeps_the_previous_release(point: &str) {
    let (t, first) = armed_device(point).await;
    let err = t.push_project("1.0.1").await.expect_err("out of memory");
    assert!(
        matches!(&err, Error::Device { code, .. } if code == "no_memory"),
        "{point}: {err:?}"
    );
    // Still the previous release, whole, and serving.
    assert_release(&t, "1.0.0", &first).await;
    assert!(!t.root.join("app/extra.py").exists());
    assert!(!t.root.join("ota_stage").exists(), "staging area dropped");
    // Once the heap is there again, the same push goes through.
    std::fs::remove_file(t.root.join(".sim_fault")).unwrap();
    t.push_project("1.0.1").await.expect("push after the fault");
    assert_installed(&t, "1.0.1").await;
}

#[tokio::test]
async fn out_of_memory_in_the_manifest_keeps_the_previous_release() {
    no_memory_keeps_the_previous_release("begin").await;
}

#[tokio::test]
async fn out_of_memory_receiving_a_file_keeps_the_previous_release() {
    no_memory_keeps_the_previous_release("file").await;
}

#[tokio::test]
async fn out_of_memory_before_the_commit_point_keeps_the_previous_release() {
    no_memory_keeps_the_previous_release("commit").await;
}

#[tokio::test]
async fn out_of_memory_after_the_commit_point_finishes_the_release_at_boot() {
    let (t, _) = armed_device("roll_forward").await;
    // Past the commit point the release is installed whatever happens: the
    // device replies no_memory, resets, and its boot finishes the install.
    let _ = t.push_project("1.0.1").await;
    std::fs::remove_file(t.root.join(".sim_fault")).unwrap();
    assert_installed(&t, "1.0.1").await;
    assert!(t.root.join("app/extra.py").exists());
}

/// `ls` streams a folder's entries: a folder of 3000 files lists on a
/// 192 KB heap (a listing built in RAM needed a 100 KB allocation).
#[tokio::test]
async fn a_folder_of_3000_files_lists_on_a_small_heap() {
    let t = start(Setup {
        runtime_code: RuntimeCode::Bytecode,
        heap_size: Some("192k"),
        ..Setup::default()
    })
    .await;
    let dir = t.root.join("data/many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("reading-{i:05}.csv")), b"1,2\n").unwrap();
    }
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut dev = t.connect().await;
    let entries = dev.ls("data/many").await.expect("ls of 3001 entries");
    assert_eq!(entries.len(), 3001);
    assert_eq!(entries[0].name, "reading-00000.csv");
    assert_eq!(entries[0].size, 4);
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    assert!(entries.iter().any(|e| e.name == "sub" && e.is_dir));
    // The device is still fine.
    assert!(dev
        .ls("data")
        .await
        .unwrap()
        .iter()
        .any(|e| e.name == "many"));
}

/// The virtual device's boot shim leaves the device its heap: when /boot.py
/// starts, the shim holds only what keeps the filesystem mounted (a board's
/// boot holds next to nothing), so `--heap N` measures the runtime, not the
/// simulator. Its machinery (about 12 KB of bytecode and names) is dropped
/// before the boot.
#[tokio::test]
async fn the_sim_shim_holds_little_of_the_heap_when_boot_py_starts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("device");
    std::fs::create_dir_all(&root).unwrap();
    // A boot.py that reports the heap in use, then listens so that the
    // supervisor sees the device up.
    std::fs::write(
        root.join("boot.py"),
        "import gc\ngc.collect()\nused = gc.mem_alloc()\n\
         with open('/mem.txt', 'w') as f:\n    f.write(str(used))\n\
         import os, socket, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(socket.getaddrinfo(os.getenv('UOTA_SIM_HOST'), int(os.getenv('UOTA_SIM_PORT')))[0][-1])\n\
         s.listen(1)\n\
         while True:\n    time.sleep(1)\n",
    )
    .unwrap();
    let (host, port) = common::unique_addr();
    let mut opts = uota::sim::SimOptions::folder(&root, &host, port);
    opts.heap_size = Some("64k".into());
    opts.log = Some(dir.path().join("console.log"));
    let dev = uota::sim::VirtualDevice::start(opts)
        .await
        .expect("boot.py ran");
    let used: u64 = std::fs::read_to_string(root.join("mem.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    dev.stop().await.unwrap();
    // Measured: ~8 KB (shim compiled to .mpy) where the whole shim stayed
    // loaded before (~17 KB); the interpreter alone holds ~2 KB.
    assert!(used < 11 * 1024, "the shim holds {used} bytes of the heap");
}
