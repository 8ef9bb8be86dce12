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
use uota::protocol::credit::CreditWindow;
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
    board_with(install, |_, _| {}).await
}

/// [`board`], with its device and serial link set up by `setup` first.
async fn board_with(
    install: bool,
    setup: impl FnOnce(&mut SimOptions, &mut SerialSimOptions),
) -> Board {
    let tmp = tempfile::Builder::new()
        .prefix("uota-serial-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("device");
    let (host, port) = common::unique_addr();
    let mut device = SimOptions::folder(&root, &host, port);
    let mut serial = SerialSimOptions::booting(&device);
    setup(&mut device, &mut serial);
    if install {
        uota::sim::provision(&device).await.unwrap();
    } else {
        std::fs::create_dir_all(&root).unwrap();
    }
    // Boots like a board; the runtime's WiFi server binds this loopback address.
    let mut opts = SerialSimOptions::booting(&device);
    opts.baud = serial.baud;
    opts.rx_buffer = serial.rx_buffer;
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
        self.session_with(ConnectOptions::default()).await
    }

    async fn session_with(&self, opts: ConnectOptions) -> uota::Result<Device> {
        let port = PtyTransport::open(self.dev.path())?;
        Device::connect_repl(Repl::new(port), opts).await
    }

    /// A session, retried while the board is still restarting.
    async fn session_within(&self, opts: ConnectOptions, within: Duration) -> Device {
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.session_with(opts.clone()).await {
                Ok(d) => return d,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("{e}\n{}", self.trace()),
            }
        }
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

/// A UART whose receive buffer holds 256 bytes, at 230400 baud.
fn overrunning_uart(_: &mut SimOptions, serial: &mut SerialSimOptions) {
    serial.baud = Some(230_400);
    serial.rx_buffer = Some(256);
}

/// The UART-safe credit, forced (the virtual device's pseudo-terminal would
/// otherwise be taken for a link with flow control of its own).
fn uart_credit() -> ConnectOptions {
    ConnectOptions {
        console_credit: Some(CreditWindow::UART),
        ..ConnectOptions::default()
    }
}

/// Incompressible bytes (so that nothing shrinks them on the way).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Wait until `cond` holds, for at most `within`; whether it did.
async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The emulated receive buffer really overruns: a burst sent while the
/// board is busy (here: sleeping in a program) loses bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_uart_drops_a_burst_the_board_does_not_read() {
    let b = board_with(false, overrunning_uart).await;
    let port = PtyTransport::open(b.dev.path()).unwrap();
    let mut repl = Repl::new(port);
    assert_eq!(b.dev.dropped_bytes(), 0);
    // A program that reads nothing for a while, its console raw as a
    // session's is (the unix port runs code with its tty in line mode,
    // where unread bytes of an unfinished line do not show).
    repl.start("import termios, time\ntermios.setraw(0)\ntime.sleep(3)\n")
        .await
        .unwrap();
    // Plain letters: a Ctrl-C in the burst would interrupt the program.
    repl.write_raw(&[b'u'; 4096]).await.unwrap();
    // 4 KB arrive while at most 256 can wait unread.
    let dropped = wait_until(Duration::from_secs(20), || {
        b.dev.dropped_bytes() >= 4096 - 256
    })
    .await;
    assert!(
        dropped,
        "the relay dropped {} bytes\n{}",
        b.dev.dropped_bytes(),
        b.trace()
    );
}

/// With the device's credit, a push through that UART loses nothing: every
/// file arrives whole, and the relay dropped no byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_an_overrunning_uart_loses_nothing_with_credit() {
    let b = board_with(true, overrunning_uart).await;
    for i in 0..3 {
        std::fs::write(
            b.project.join(format!("app/blob{i}.bin")),
            noise(4096, i + 7),
        )
        .unwrap();
    }
    let mut dev = b
        .session_with(uart_credit())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(dev.console_credit(), Some(CreditWindow::UART));
    let (_, bundle) = common::project_bundle(&b.project, PushMode::Full, "2.0.0");
    let report = dev
        .push_bundle(&bundle, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert!(report.files_sent >= 6, "{report:?}");
    assert_eq!(b.dev.dropped_bytes(), 0, "{}", b.trace());
    // Every file on the board is the project's, byte for byte.
    let mut dev = b
        .session_within(uart_credit(), Duration::from_secs(30))
        .await;
    assert_eq!(dev.version().await.unwrap(), "2.0.0");
    dev.close().await.unwrap();
    let manifest = bundle.into_manifest();
    for f in &manifest.files {
        let on_board =
            std::fs::read(b.root.join(&f.path)).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert_eq!(
            common::sha256_hex(&on_board),
            f.sha256_hex(),
            "{} differs on the board",
            f.path
        );
    }
    assert_eq!(b.dev.dropped_bytes(), 0);
}

/// A link that drops in the middle of a push leaves the board on the release
/// it had: the session times out, the board restarts, nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_dropped_mid_push_leaves_the_previous_release() {
    let b = board_with(true, |device, serial| {
        overrunning_uart(device, serial);
        device.settings.session_timeout = 3;
    })
    .await;
    let mut dev = b
        .session_with(uart_credit())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    let (_, first) = common::project_bundle(&b.project, PushMode::Full, "2.0.0");
    dev.push_bundle(&first, &PushOptions::default(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    let main_before = std::fs::read(b.root.join("main.py")).unwrap();

    // The next release: a changed main.py and a big file, cut off midway.
    std::fs::write(b.project.join("main.py"), "print('3.0.0')\n").unwrap();
    std::fs::write(b.project.join("app/big.bin"), noise(32 * 1024, 3)).unwrap();
    let (_, second) = common::project_bundle(&b.project, PushMode::Full, "3.0.0");
    let mut dev = b
        .session_within(uart_credit(), Duration::from_secs(30))
        .await;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = sent.clone();
    let push = tokio::spawn(async move {
        let opts = PushOptions {
            delta: false,
            ..PushOptions::default()
        };
        dev.push_bundle(&second, &opts, &mut |ev| {
            if let uota::device::PushEvent::Progress { sent, .. } = ev {
                seen.store(*sent, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await
    });
    let midway = wait_until(Duration::from_secs(60), || {
        sent.load(std::sync::atomic::Ordering::SeqCst) >= 8 * 1024
    })
    .await;
    assert!(midway, "the push did not get going\n{}", b.trace());
    // The cable is pulled: the host side goes away mid-file.
    push.abort();
    let _ = push.await;

    // The board gives up on the silent session, restarts, and still runs 2.0.0.
    let mut dev = b
        .session_within(uart_credit(), Duration::from_secs(60))
        .await;
    assert_eq!(dev.version().await.unwrap(), "2.0.0", "{}", b.trace());
    dev.close().await.unwrap();
    assert_eq!(std::fs::read(b.root.join("main.py")).unwrap(), main_before);
    assert!(!b.root.join("app/big.bin").exists());
    assert_eq!(b.dev.dropped_bytes(), 0);
}

/// A board whose runtime predates the console's credit (its `arm()` takes
/// no credit) still serves a session: without credit, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_without_credit_still_serves_a_session() {
    let b = board(true).await;
    let module = b.root.join("lib/uota/transports/serial_stdio.py");
    let mut source = std::fs::read_to_string(&module).unwrap();
    source.push_str(
        "\n\ndef arm():\n    with open(SERIAL_SESSION, 'w') as f:\n        f.write('1')\n    return 'uota-serial:armed'\n",
    );
    std::fs::write(&module, source).unwrap();
    let mut dev = b
        .session_with(uart_credit())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(dev.console_credit(), None);
    dev.ping().await.unwrap();
    assert_eq!(dev.info().await.unwrap().extra["platform"], "linux");
    dev.close().await.unwrap();
}
