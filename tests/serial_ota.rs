//! OTA over a serial console: the real runtime, installed on a serial virtual
//! device (the unix port on a pseudo-terminal), serves the OTA protocol on its
//! REPL console.
#![cfg(unix)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{ConnectOptions, PushOptions};
use uota::repl::Repl;
use uota::sim::{SerialSimOptions, SimOptions, VirtualSerialDevice};
use uota::transport::pty::PtyTransport;
use uota::Device;
use uota::PushMode;

struct Board {
    dev: VirtualSerialDevice,
    root: PathBuf,
    project: PathBuf,
    tmp: tempfile::TempDir,
}

/// A serial virtual device with the runtime installed (as `bootstrap` leaves
/// a board), booting like a board, and a starter project.
async fn board(install: bool) -> Board {
    let tmp = tempfile::Builder::new()
        .prefix("uota-serial-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("device");
    let (host, port) = common::unique_addr();
    let device = SimOptions::folder(&root, &host, port);
    if install {
        uota::sim::provision(&device).await.unwrap();
    } else {
        std::fs::create_dir_all(&root).unwrap();
    }
    // Boots like a board; the runtime's WiFi server binds this loopback address.
    let mut opts = SerialSimOptions::booting(&device);
    opts.trace = Some(tmp.path().join("trace.log"));
    let dev = VirtualSerialDevice::start(opts).await.unwrap();
    let project = tmp.path().join("project");
    common::copy_tree(&common::repo().join("examples/starter"), &project);
    Board {
        dev,
        root,
        project,
        tmp,
    }
}

impl Board {
    async fn session(&self) -> uota::Result<Device> {
        let port = PtyTransport::open(self.dev.path())?;
        Device::connect_repl(Repl::new(port), ConnectOptions::default()).await
    }

    /// The end of the relay's byte trace, for failure messages.
    fn trace(&self) -> String {
        let t = std::fs::read_to_string(self.tmp.path().join("trace.log")).unwrap_or_default();
        let mut start = t.len().saturating_sub(5000);
        while !t.is_char_boundary(start) {
            start += 1;
        }
        t[start..].to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_over_the_serial_console_then_the_repl_is_back() {
    let b = board(true).await;
    let mut dev = b
        .session()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    dev.ping().await.unwrap();
    let info = dev.info().await.unwrap();
    assert_eq!(info.extra["platform"], "linux", "{info:?}");

    let project = Project::load(&b.project).unwrap();
    let mut manifest = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    manifest.version = "2.0.0".into();
    let report = dev
        .push(&b.project, &manifest, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(report.version, "2.0.0");
    assert!(report.files_sent >= 3);
    // The commit reset the board; it boots into the new release.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut dev = loop {
        match b.session().await {
            Ok(d) => break d,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("{e}\n{}", b.trace()),
        }
    };
    assert_eq!(dev.version().await.unwrap(), "2.0.0");
    let main = dev.get("main.py").await.unwrap();
    assert_eq!(main, std::fs::read(b.project.join("main.py")).unwrap());
    assert_eq!(std::fs::read(b.root.join("main.py")).unwrap(), main);
    let names: Vec<String> = dev
        .ls("app")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"counter.py".to_string()), "{names:?}");

    dev.close().await.unwrap();

    // Serial sessions do not use up the pending release's boot attempts
    // (bootAttempts is 2): after three more the release is still 2.0.0.
    for _ in 0..3 {
        let mut dev = b
            .session()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
        assert_eq!(dev.version().await.unwrap(), "2.0.0");
        dev.close().await.unwrap();
    }
    let dev = b.session().await.unwrap();
    let mut dev = dev;
    let info = dev.info().await.unwrap();
    assert_eq!(info.version, "2.0.0");
    assert_eq!(info.extra["release"]["state"], "pending", "{info:?}");

    // bye: the board resets into a normal boot; the console is the REPL's again.
    let io = dev.bye().await.unwrap();
    let mut repl = Repl::new(io);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // The board is rebooting: Ctrl-C reaches it once it is up.
        let _ = repl.interrupt().await;
        match repl.exec("print(6 * 7)").await {
            Ok(out) => {
                assert_eq!(out.stdout_text().trim(), "42");
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
            }
            Err(e) => panic!("{e}\n{}", b.trace()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_without_the_runtime_says_to_bootstrap() {
    let b = board(false).await;
    let err = b.session().await.unwrap_err();
    assert!(err.to_string().contains("bootstrap"), "{err}");
    // The REPL still works.
    let port = PtyTransport::open(b.dev.path()).unwrap();
    let mut repl = Repl::new(port);
    assert_eq!(repl.eval("1 + 1").await.unwrap(), "2");
}

/// A device opened from a serial link reconnects over the same link after
/// the commit restarted the board, and reports the link's capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_link_reconnects_after_the_commit_restarted_the_board() {
    let b = board(true).await;
    let link: uota::device::Link = format!("serial://{}", b.dev.path().display())
        .parse()
        .unwrap();
    let mut dev = Device::open(&link, ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(dev.link(), Some(&link));
    assert!(
        dev.capabilities().flow_control,
        "a pseudo-terminal paces itself"
    );
    let mut bundle =
        Bundle::for_project(&Project::load(&b.project).unwrap(), PushMode::Full).unwrap();
    bundle.set_version("3.0.0");
    dev.push_bundle(&bundle, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    dev.reconnect(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(dev.version().await.unwrap(), "3.0.0");
    dev.close().await.unwrap();
}
