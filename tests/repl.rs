//! The raw REPL driver against a serial virtual device: the real MicroPython
//! unix port on a pseudo-terminal, opened by path like a board's serial port.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uota::repl::{Repl, ReplMode};
use uota::sim::{SerialSimOptions, VirtualSerialDevice};
use uota::transport::pty::PtyTransport;
use uota::{Error, ErrorKind};

/// A serial virtual device in a temp folder, and a REPL on its port.
struct Bench {
    dev: VirtualSerialDevice,
    repl: Repl<PtyTransport>,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Start a device whose root holds `files`, with `tweak` applied to its options.
async fn bench(files: &[(&str, &str)], tweak: impl FnOnce(&mut SerialSimOptions)) -> Bench {
    let tmp = tempfile::Builder::new()
        .prefix("uota-repl-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("device");
    std::fs::create_dir_all(&root).unwrap();
    for (name, text) in files {
        std::fs::write(root.join(name), text).unwrap();
    }
    let mut opts = SerialSimOptions::folder(&root);
    opts.trace = Some(tmp.path().join("trace.log"));
    tweak(&mut opts);
    let dev = VirtualSerialDevice::start(opts)
        .await
        .expect("device starts");
    let port = PtyTransport::open(dev.path()).expect("open the port");
    let repl = Repl::new(port);
    Bench {
        dev,
        repl,
        root,
        _tmp: tmp,
    }
}

impl Bench {
    /// The bytes relayed so far, for failure messages.
    fn trace(&self) -> String {
        std::fs::read_to_string(self._tmp.path().join("trace.log")).unwrap_or_default()
    }
}

/// Stdout with the device's line endings made `\n`.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_stdout_over_raw_paste() {
    let mut b = bench(&[], |_| {}).await;
    b.repl.interrupt().await.unwrap();
    b.repl.enter_raw().await.unwrap();
    assert_eq!(b.repl.mode(), ReplMode::Raw);
    let out = b
        .repl
        .exec("print('hello')\nfor i in range(3):\n    print(i * i)")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(text(&out.stdout), "hello\n0\n1\n4\n");
    assert!(out.stderr.is_empty());
    assert!(out.raw_paste, "the unix port has raw-paste: {}", b.trace());
    assert_eq!(b.repl.raw_paste_supported(), Some(true));
    // A second exec reuses the raw REPL.
    let out = b.repl.exec("print(6 * 7)").await.unwrap();
    assert_eq!(text(&out.stdout), "42\n");
    b.dev.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_returns_the_repr() {
    let mut b = bench(&[], |_| {}).await;
    // No explicit enter_raw: exec gets there by itself.
    assert_eq!(b.repl.eval("1 + 2").await.unwrap(), "3");
    assert_eq!(b.repl.eval("'ab' * 2").await.unwrap(), "'abab'");
    assert_eq!(
        b.repl.eval("[1, None, b'\\x03']").await.unwrap(),
        "[1, None, b'\\x03']"
    );
    let root = b.repl.eval("__import__('os').listdir('/')").await.unwrap();
    assert_eq!(root, "[]", "the device's root is its own, empty folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_exception_is_a_typed_error_with_the_traceback() {
    let mut b = bench(&[], |_| {}).await;
    let err = b
        .repl
        .exec("x = 1\nprint('before')\nx / 0")
        .await
        .unwrap_err();
    match &err {
        Error::DeviceException {
            exception,
            message,
            traceback,
        } => {
            assert_eq!(exception, "ZeroDivisionError");
            assert_eq!(message, "divide by zero");
            assert!(
                traceback.contains("Traceback (most recent call last)"),
                "{traceback}"
            );
            assert!(traceback.contains("line 3"), "{traceback}");
        }
        other => panic!("expected a device exception, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Device);
    assert!(err.to_string().contains("ZeroDivisionError"), "{err}");

    // stdout and stderr come apart.
    let out = b
        .repl
        .exec_capture("print('out')\nraise ValueError('bad value')")
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "out\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ValueError: bad value"), "{stderr}");
    assert!(!stderr.contains("out\n"), "{stderr}");
    match out.exception() {
        Some(Error::DeviceException {
            exception, message, ..
        }) => {
            assert_eq!(exception, "ValueError");
            assert_eq!(message, "bad value");
        }
        other => panic!("{other:?}"),
    }

    // The REPL is fine afterwards.
    assert_eq!(b.repl.eval("'still here'").await.unwrap(), "'still here'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_early_in_a_long_paste_ends_it_cleanly() {
    let mut b = bench(&[], |_| {}).await;
    // The device stops reading at the error and asks to end the paste
    // long before the 30 KB are sent.
    let mut code = String::from("x = (1 +* 2)\n");
    while code.len() < 30_000 {
        code.push_str("y = 'padding padding padding padding'\n");
    }
    let err = b.repl.exec(&code).await.unwrap_err();
    match &err {
        Error::DeviceException { exception, .. } => assert_eq!(exception, "SyntaxError"),
        other => panic!("expected a SyntaxError, got {other:?}\n{}", b.trace()),
    }
    assert_eq!(b.repl.eval("7 * 6").await.unwrap(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_loop_started_without_waiting() {
    let mut b = bench(&[], |_| {}).await;
    let paste = b.repl.start("while True:\n    pass").await.unwrap();
    assert!(paste);
    assert_eq!(b.repl.mode(), ReplMode::Running);
    // Running: exec refuses instead of typing into the program.
    let err = b.repl.exec("print(1)").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.repl.interrupt().await.unwrap();
    b.repl.enter_raw().await.unwrap();
    let out = b.repl.exec("print('alive')").await.unwrap();
    assert_eq!(text(&out.stdout), "alive\n");
    assert_eq!(b.dev.boots(), 1, "an interrupt is not a reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_collects_a_started_programs_output() {
    let mut b = bench(&[], |_| {}).await;
    b.repl
        .start("import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.05)\n1/0")
        .await
        .unwrap();
    let err = b.repl.follow().await.unwrap_err();
    assert!(
        matches!(&err, Error::DeviceException { exception, .. } if exception == "ZeroDivisionError"),
        "{err:?}"
    );
    assert_eq!(b.repl.mode(), ReplMode::Raw);
    assert_eq!(b.repl.eval("1").await.unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_link_to_a_started_program_carries_ctrl_c_as_data_when_kbd_intr_is_off() {
    let mut b = bench(&[], |_| {}).await;
    b.repl
        .start(
            "import micropython, sys\nmicropython.kbd_intr(-1)\nprint('ready')\n\
             data = sys.stdin.buffer.read(4)\nmicropython.kbd_intr(3)\nprint(repr(data))",
        )
        .await
        .unwrap();
    // Wait for the program to say it listens, reading the link directly.
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text(&seen).contains("ready\n") {
        assert!(Instant::now() < deadline, "no 'ready': {:?}", text(&seen));
        let n = tokio::time::timeout(Duration::from_secs(5), b.repl.read_raw(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    b.repl.write_raw(b"\x03a\x04b").await.unwrap();
    let out = b.repl.follow().await.unwrap();
    assert_eq!(text(&out.stdout).trim(), r"b'\x03a\x04b'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_main_py_running_at_boot() {
    let boot = "with open('/booted', 'w') as f:\n    f.write('yes')\n";
    let main = "import time\nprint('main running')\nwhile True:\n    time.sleep(0.01)\n";
    let mut b = bench(&[("boot.py", boot), ("main.py", main)], |o| {
        o.run_boot = true
    })
    .await;
    // As a person at the console: wait until the app runs, then Ctrl-C.
    // (A Ctrl-C during boot.py would interrupt boot.py, as on a board.) It may
    // have printed before the port was opened, so look at the relay's trace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.trace().contains("main running") {
        assert!(
            Instant::now() < deadline,
            "main.py never ran: {}",
            b.trace()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.repl.interrupt().await.unwrap();
    b.repl
        .enter_raw()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    let out = b.repl.exec("print(open('/booted').read())").await.unwrap();
    assert_eq!(text(&out.stdout), "yes\n");
    assert_eq!(
        std::fs::read_to_string(b.root.join("booted")).unwrap(),
        "yes"
    );
    let trace = b.trace();
    assert!(trace.contains("main running"), "{trace}");
    assert!(trace.contains("KeyboardInterrupt"), "{trace}");
}

/// Ctrl-C lands where the program waits. The unix port raises
/// KeyboardInterrupt from inside its signal handler, wherever the code is: in
/// the middle of an allocation or of interning a name it leaves the heap or
/// the name table locked, and the interpreter hangs at its next one (seen as
/// a raw-paste or raw-banner timeout now and then). A board checks for Ctrl-C
/// between bytecodes; the virtual device delivers it while the program waits
/// in a system call. The program here alternates 30 ms of computing (no
/// system calls) with 30 ms of sleep and records which it was doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lands_while_the_program_waits() {
    let program = [
        "import time",
        "phase = 'starting'",
        "try:",
        "    while True:",
        "        phase = 'computing'",
        "        t = time.ticks_ms()",
        "        while time.ticks_diff(time.ticks_ms(), t) < 30:",
        "            pass",
        "        phase = 'waiting'",
        "        time.sleep_ms(30)",
        "except KeyboardInterrupt:",
        "    print('interrupted while', phase)",
    ]
    .join("\n");
    let mut b = bench(&[], |_| {}).await;
    b.repl.interrupt().await.unwrap();
    b.repl.enter_raw().await.unwrap();
    for round in 0..8u64 {
        b.repl.start(&program).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40 + round * 7)).await;
        b.repl.write_raw(b"\x03").await.unwrap();
        let out = b
            .repl
            .follow()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", b.trace()));
        assert_eq!(
            text(&out.stdout),
            "interrupted while waiting\n",
            "round {round}: {}",
            b.trace()
        );
    }
    assert_eq!(b.dev.boots(), 1, "interrupts are not resets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_raw_repl_when_raw_paste_is_off_carries_a_big_block() {
    let mut b = bench(&[], |_| {}).await;
    b.repl.set_raw_paste(false);
    let mut code = String::new();
    let mut want = 0u64;
    for i in 0..400 {
        code.push_str(&format!(
            "v{i} = {i} * 3  # a line of padding to make the block bigger\n"
        ));
        want += i * 3;
    }
    code.push_str("print(sum(globals()['v%d' % i] for i in range(400)))\n");
    assert!(code.len() > 4096, "{}", code.len());
    let out = b
        .repl
        .exec(&code)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(text(&out.stdout).trim(), want.to_string());
    assert!(!out.raw_paste);
    assert_eq!(b.repl.raw_paste_supported(), None, "never asked");
    assert!(!b.trace().contains(r#"H>D "\x05A\x01""#));
    // Back on: raw-paste is used again.
    b.repl.set_raw_paste(true);
    let out = b.repl.exec("print('x')").await.unwrap();
    assert!(out.raw_paste);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_reset_clears_the_interpreter_and_returns_to_raw() {
    let boot = "print('boot.py says hi')\n";
    let main = "print('main.py ran')\n";
    let mut b = bench(&[("boot.py", boot), ("main.py", main)], |o| {
        o.run_boot = true
    })
    .await;
    b.repl.exec("marker = 42").await.unwrap();
    assert_eq!(b.repl.eval("marker").await.unwrap(), "42");
    let trace_before = b.trace().len();
    let boots_before = b.dev.boots();
    b.repl
        .soft_reset()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(b.repl.mode(), ReplMode::Raw);
    assert_eq!(
        b.dev.boots(),
        boots_before + 1,
        "the unix port restarted once"
    );
    assert_eq!(b.repl.eval("'marker' in globals()").await.unwrap(), "False");
    // What the host saw is a board's soft reset.
    let after = &b.trace()[trace_before..];
    assert!(after.contains("soft reboot"), "{after}");
    assert!(after.contains("boot.py says hi"), "{after}");
    assert!(
        !after.contains("main.py ran"),
        "skipped after a raw soft reset: {after}"
    );
    assert!(
        !after.contains("Type \\\"help()\\\""),
        "friendly banner shown: {after}"
    );

    // A program's SystemExit soft-resets too; its output still comes back.
    let out = b
        .repl
        .exec_capture("print('bye')\nimport sys\nsys.exit()")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(text(&out.stdout), "bye\n");
    assert_eq!(b.dev.boots(), boots_before + 2);
    assert_eq!(b.repl.eval("2 + 2").await.unwrap(), "4");

    // Exit code 75 is the runtime's reset: a hard reset, after which boot.py
    // and main.py run and the device comes up in the friendly REPL.
    let out = b
        .repl
        .exec_capture("print('resetting')\nimport sys\nsys.exit(75)")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    assert_eq!(text(&out.stdout), "resetting\n");
    assert_eq!(b.dev.boots(), boots_before + 3);
    assert!(
        b.trace().matches("main.py ran").count() >= 2,
        "{}",
        b.trace()
    );
    assert_eq!(b.repl.eval("'back'").await.unwrap(), "'back'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_reset_from_the_friendly_repl_and_leave_raw() {
    let mut b = bench(&[], |_| {}).await;
    b.repl.exec("y = 1").await.unwrap();
    b.repl.leave_raw().await.unwrap();
    assert_eq!(b.repl.mode(), ReplMode::Friendly);
    // A person's Ctrl-D at the friendly prompt: the device soft-resets.
    b.repl.write_raw(b"\x04").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.dev.boots() < 2 {
        assert!(Instant::now() < deadline, "no restart: {}", b.trace());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.dev.wait_ready(Duration::from_secs(10)).await.unwrap();
    b.repl.machine_mut().set_mode(ReplMode::Unknown);
    assert_eq!(b.repl.eval("'y' in globals()").await.unwrap(), "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_typed_and_the_repl_recovers() {
    let mut b = bench(&[], |_| {}).await;
    b.repl.timeouts_mut().exec = Duration::from_millis(300);
    let started = Instant::now();
    let err = b.repl.exec("import time\ntime.sleep(5)").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    match &err {
        Error::Timeout { what, after } => {
            assert!(what.contains("output"), "{what}");
            assert_eq!(*after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(b.repl.mode(), ReplMode::Unknown);
    // The next exec interrupts the sleeper and goes on.
    b.repl.timeouts_mut().exec = Duration::from_secs(10);
    assert_eq!(b.repl.eval("'recovered'").await.unwrap(), "'recovered'");

    // Entering the raw REPL while a program runs (no interrupt) times out too.
    b.repl.start("while True:\n    pass").await.unwrap();
    b.repl.timeouts_mut().enter_raw = Duration::from_millis(300);
    let err = b.repl.enter_raw().await.unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { what, .. } if what.contains("raw REPL")),
        "{err:?}"
    );
    b.repl.timeouts_mut().enter_raw = Duration::from_secs(5);
    let three = b.repl.eval("3").await;
    assert_eq!(three.as_deref().ok(), Some("3"), "{three:?}\n{}", b.trace());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn littlefs_image_device() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("flash.img");
    let dev = VirtualSerialDevice::start(SerialSimOptions::image(&image))
        .await
        .unwrap();
    let mut repl = Repl::new(PtyTransport::open(dev.path()).unwrap());
    repl.exec("with open('/note.txt', 'w') as f:\n    f.write('on flash')")
        .await
        .unwrap();
    assert_eq!(
        repl.eval("open('/note.txt').read()").await.unwrap(),
        "'on flash'"
    );
    let statvfs = repl.eval("__import__('os').statvfs('/')[0]").await.unwrap();
    assert_eq!(statvfs, "4096", "littlefs with 4096-byte blocks");
    drop(repl);
    dev.stop().await.unwrap();
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        uota::sim::DEFAULT_IMAGE_SIZE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uart_line_rate_limits_throughput() {
    let mut b = bench(&[], |o| o.baud = Some(115_200)).await;
    assert_eq!(b.dev.baud(), Some(115_200));
    assert_eq!(b.repl.eval("1 + 1").await.unwrap(), "2");
    // 20 KB of code at 11 520 bytes/s cannot cross in less than ~1.7 s.
    let mut code = String::new();
    let mut n = 0;
    while code.len() < 20_000 {
        code.push_str(&format!("a{n} = '{}'\n", "z".repeat(40)));
        n += 1;
    }
    code.push_str(&format!("print(len(a{}))\n", n - 1));
    let started = Instant::now();
    let out = b
        .repl
        .exec(&code)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.trace()));
    let took = started.elapsed();
    assert_eq!(text(&out.stdout), "40\n");
    assert!(out.raw_paste);
    assert!(
        took >= Duration::from_millis(1500),
        "20 KB crossed a 115200-baud link in {took:?}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_device_kills_the_interpreter() {
    let b = bench(&[], |_| {}).await;
    let path: PathBuf = b.dev.path().to_path_buf();
    let pids = interpreter_pids(&b.root);
    assert_eq!(pids.len(), 1, "{pids:?}");
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", pids[0])).exists() && !is_zombie(pids[0]) {
        assert!(
            Instant::now() < deadline,
            "interpreter {} still alive",
            pids[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = path;
}

/// Processes whose environment names `root` as the device root.
fn interpreter_pids(root: &Path) -> Vec<u32> {
    let needle = format!("UOTA_SIM_ROOT={}", root.canonicalize().unwrap().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_image_is_an_error_not_a_reboot_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("flash.img");
    std::fs::write(&image, vec![0x5au8; 64 * 1024]).unwrap();
    let started = Instant::now();
    let err = VirtualSerialDevice::start(SerialSimOptions::image(&image))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("exit code 2"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_racing_the_end_of_a_program_never_resets_the_device() {
    // At the prompt the unix port dies of SIGINT; the relay must only ever
    // deliver it while a program runs, even when the program is just ending.
    let mut b = bench(&[], |_| {}).await;
    for n in 0..20u32 {
        let spin = 200 * (n % 7) * (n % 7);
        b.repl
            .start(format!("for i in range({spin}):\n    pass"))
            .await
            .unwrap();
        b.repl.interrupt().await.unwrap();
        b.repl
            .enter_raw()
            .await
            .unwrap_or_else(|e| panic!("round {n}: {e}\n{}", b.trace()));
    }
    assert_eq!(b.repl.eval("'alive'").await.unwrap(), "'alive'");
    assert_eq!(b.dev.boots(), 1, "{}", b.trace());
}
