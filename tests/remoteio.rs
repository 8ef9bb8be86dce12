//! RemoteIO against real virtual devices: calls (run once across link
//! drops), errors, authentication, and the output stream.

mod common;

use std::time::Duration;

use common::{start, Setup, TestDevice};
use serde_json::{json, Map, Value};
use uota::device::Link;
use uota::remoteio::{Caller, OutputEvent, RemoteIoOptions};

/// The RemoteIO test app (tests/device/remoteio_app.py, shared with the
/// Python tests), printing `tick N` every `period_ms`.
fn app(period_ms: u32) -> String {
    let text =
        std::fs::read_to_string(common::repo().join("tests/device/remoteio_app.py")).unwrap();
    let default = "PERIOD_MS = 100";
    assert!(text.contains(default), "the app sets {default}");
    text.replace(default, &format!("PERIOD_MS = {period_ms}"))
}

async fn device_with_app(setup: Setup, period_ms: u32) -> TestDevice {
    let t = start(setup).await;
    std::fs::write(t.project.join("main.py"), app(period_ms)).unwrap();
    t.push_project("1.0.0").await.expect("push the app");
    t
}

fn caller(t: &TestDevice, link: Link) -> Caller {
    Caller::new(link, t.options(), RemoteIoOptions::default())
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn code_of(e: &uota::Error) -> String {
    match e {
        uota::Error::Device { code, .. } => code.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_return_results_and_errors_and_the_device_keeps_serving() {
    let t = device_with_app(
        Setup {
            key: Some("remoteio-key"),
            ..Setup::default()
        },
        1000,
    )
    .await;
    let mut c = caller(&t, Link::tcp(t.host(), t.port()));
    assert_eq!(c.call("ping", Map::new()).await.unwrap().value, "pong");
    assert_eq!(c.call("version", Map::new()).await.unwrap().value, "1.0.0");
    assert!(c
        .call("uptime_ms", Map::new())
        .await
        .unwrap()
        .value
        .as_u64()
        .is_some());
    assert!(
        c.call("free_mem", Map::new())
            .await
            .unwrap()
            .value
            .as_u64()
            .unwrap()
            > 0
    );
    let info = c.call("info", Map::new()).await.unwrap().value;
    assert!(
        info["handlers"].as_array().unwrap().contains(&json!("add")),
        "{info}"
    );
    let r = c.call("add", args(json!({"a": 2, "b": 40}))).await.unwrap();
    assert_eq!(r.value, 42);
    assert!(!r.duplicate);
    for (name, a, code, says) in [
        ("nope", json!({}), "unknown_handler", "nope"),
        ("boom", json!({}), "call_failed", "ValueError: boom"),
        ("hang", json!({}), "call_timeout", "500 ms"),
        ("add", json!({"c": 1}), "call_failed", "TypeError"),
        ("unjsonable", json!({}), "bad_result", "JSON"),
    ] {
        let e = c.call(name, args(a)).await.unwrap_err();
        assert_eq!(code_of(&e), code, "{name}: {e}");
        assert!(e.to_string().contains(says), "{name}: {e}");
    }
    // A burst of 1,000 calls on one connection: every one answered, in order.
    for i in 0..1000 {
        let r = c.call("add", args(json!({"a": i, "b": 1}))).await.unwrap();
        assert_eq!(r.value, i + 1);
    }
    c.close().await;
    // OTA still works.
    t.push_project("1.0.1")
        .await
        .expect("a push after the calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_the_key_and_a_captured_call_cannot_be_replayed() {
    let t = device_with_app(
        Setup {
            password: Some("pw-remoteio"),
            key: Some("remoteio-key"),
            ..Setup::default()
        },
        1000,
    )
    .await;
    // No password: refused.
    let mut anon = Caller::new(
        Link::tcp(t.host(), t.port()),
        uota::device::ConnectOptions::default(),
        RemoteIoOptions::default(),
    );
    let e = anon
        .call("append", args(json!({"n": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), uota::ErrorKind::Auth, "{e}");
    // A wrong password: refused.
    let mut wrong = Caller::new(
        Link::tcp(t.host(), t.port()),
        uota::device::ConnectOptions {
            password: Some(uota::auth::Password::new("nope")),
            ..uota::device::ConnectOptions::default()
        },
        RemoteIoOptions::default(),
    );
    let e = wrong
        .call("append", args(json!({"n": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), uota::ErrorKind::Auth, "{e}");
    // A call request without the session's seal (as a replay would be): refused.
    let mut raw = common::RawClient::connect(&t, true).await;
    raw.authenticate(uota::auth::AuthMethod::Key, b"remoteio-key")
        .await;
    raw.req_raw(json!({"op": "call", "id": "x1", "name": "append", "args": {"n": 7}}))
        .await;
    let r = raw.response().await.unwrap_or(Value::Null);
    assert_eq!(r["err"], "unbound", "{r}");
    assert!(!t.root.join("data/calls.txt").exists(), "nothing ran");
}

/// A relay to the device that cuts every connection after a random number
/// of bytes in either direction.
async fn cutting_relay(to: (String, u16)) -> (String, u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = common::unique_addr();
    let l = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        while let Ok((client, _)) = l.accept().await {
            let Ok(device) = tokio::net::TcpStream::connect((to.0.as_str(), to.1)).await else {
                continue;
            };
            let (up_cut, down_cut) = (200 + next() % 3000, 300 + next() % 3000);
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut dr, mut dw) = device.into_split();
                async fn pipe(
                    r: &mut (impl AsyncReadExt + Unpin),
                    w: &mut (impl AsyncWriteExt + Unpin),
                    cut: u64,
                ) {
                    let mut buf = vec![0u8; 1024];
                    let mut total = 0u64;
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let allowed = (cut - total).min(n as u64) as usize;
                        if w.write_all(&buf[..allowed]).await.is_err() {
                            return;
                        }
                        total += allowed as u64;
                        if total >= cut {
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = pipe(&mut cr, &mut dw, up_cut) => {}
                    _ = pipe(&mut dr, &mut cw, down_cut) => {}
                }
            });
        }
    });
    (host, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_through_a_cutting_link_each_run_once() {
    let t = device_with_app(
        Setup {
            key: Some("remoteio-key"),
            ..Setup::default()
        },
        1000,
    )
    .await;
    let (host, port) = cutting_relay((t.host().to_string(), t.port())).await;
    let mut c = Caller::new(
        Link::tcp(&host, port),
        t.options(),
        RemoteIoOptions {
            backoff: Duration::from_millis(20),
            call_timeout: Duration::from_secs(60),
            ..RemoteIoOptions::default()
        },
    );
    let mut resent = 0;
    let mut duplicates = 0;
    for n in 0..200 {
        let r = c
            .call("append", args(json!({"n": n})))
            .await
            .unwrap_or_else(|e| panic!("call {n}: {e}\n{}", t.log()));
        assert_eq!(r.value, n, "call {n} returned its own result");
        resent += (r.attempts > 1) as u32;
        duplicates += r.duplicate as u32;
    }
    c.close().await;
    let text = std::fs::read_to_string(t.root.join("data/calls.txt")).unwrap();
    let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    let want: Vec<u64> = (0..200).collect();
    assert_eq!(got, want, "every call ran exactly once, in order");
    eprintln!("{resent} calls were sent more than once; {duplicates} answered as duplicates");
    assert!(resent > 0, "the relay cut some calls");
}

/// Collect output events until `done` says so (or 60 s pass).
async fn listen_until(
    t: &TestDevice,
    done: impl Fn(&[OutputEvent]) -> bool + Send,
) -> Vec<OutputEvent> {
    listen_until_with(
        t,
        t.options(),
        RemoteIoOptions::default().micro_ota_port,
        done,
    )
    .await
}

/// [`listen_until`] with these connect options and micro-ota RemoteIO port.
async fn listen_until_with(
    t: &TestDevice,
    connect: uota::device::ConnectOptions,
    micro_ota_port: u16,
    done: impl Fn(&[OutputEvent]) -> bool + Send,
) -> Vec<OutputEvent> {
    let link = Link::tcp(t.host(), t.port());
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let mut on_event = move |ev: &OutputEvent| {
        let mut v = seen.lock().unwrap();
        v.push(ev.clone());
        if done(&v) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
    };
    let stop = async {
        let _ = tokio::time::timeout(Duration::from_secs(60), rx).await;
    };
    let opts = RemoteIoOptions {
        outage_after: Duration::from_secs(2),
        backoff: Duration::from_millis(50),
        micro_ota_port,
        ..RemoteIoOptions::default()
    };
    uota::remoteio::listen(&link, &connect, &opts, &mut on_event, stop)
        .await
        .unwrap();
    let v = events.lock().unwrap().clone();
    v
}

fn ticks(evs: &[OutputEvent]) -> Vec<(u64, u64)> {
    evs.iter()
        .filter_map(|e| match e {
            OutputEvent::Line { seq, text } => text
                .strip_prefix("tick ")
                .and_then(|n| n.trim().parse().ok())
                .map(|n| (*seq, n)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_see_every_line_once_while_a_push_restarts_the_device() {
    let t = std::sync::Arc::new(device_with_app(Setup::default(), 5).await);
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let t = t.clone();
        listeners.push(tokio::spawn(async move {
            listen_until(&t, |evs| {
                evs.iter()
                    .any(|e| matches!(e, OutputEvent::Restarted { .. }))
                    && ticks(evs).last().is_some_and(|(_, n)| *n >= 20)
                    && evs
                        .iter()
                        .rev()
                        .take_while(|e| !matches!(e, OutputEvent::Restarted { .. }))
                        .count()
                        > 20
            })
            .await
        }));
    }
    // Wait until the listeners hear ticks, then push (the device restarts).
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.push_project("2.0.0")
        .await
        .expect("a push while three listen");
    for l in listeners {
        let evs = l.await.unwrap();
        let restart = evs
            .iter()
            .position(|e| matches!(e, OutputEvent::Restarted { .. }))
            .expect("the listener saw the restart");
        for part in [&evs[..restart], &evs[restart + 1..]] {
            let lines: Vec<u64> = part
                .iter()
                .filter_map(|e| match e {
                    OutputEvent::Line { seq, .. } => Some(*seq),
                    _ => None,
                })
                .collect();
            assert!(!lines.is_empty());
            let contiguous: Vec<u64> = (lines[0]..lines[0] + lines.len() as u64).collect();
            assert_eq!(lines, contiguous, "no line twice, none missing");
            assert!(
                !part.iter().any(|e| matches!(e, OutputEvent::Gap { .. })),
                "a fast listener misses nothing: {part:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_away_longer_than_the_buffer_resumes_and_is_told_what_it_missed() {
    let t = device_with_app(Setup::default(), 5).await;
    let mut dev = t.connect().await;
    let boot = dev.listen(0, None, Duration::from_secs(1)).await.unwrap();
    let mut stream = uota::remoteio::OutputStream::new(Duration::from_secs(4));
    stream.on_listen_reply(boot, std::time::Instant::now());
    while stream.resume_from() < 10 {
        let p = dev.next_output(Duration::from_secs(5)).await.unwrap();
        stream.on_data(&p, std::time::Instant::now()).unwrap();
    }
    dev.cancel();
    let resume = stream.resume_from();
    // Away for 5 s: the app prints some 1,000 lines; the buffer holds fewer.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut dev = t.connect().await;
    let again = dev
        .listen(resume, Some(boot), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        stream
            .on_listen_reply(again, std::time::Instant::now())
            .is_empty(),
        "same boot"
    );
    let mut evs = Vec::new();
    while !evs.iter().any(|e| matches!(e, OutputEvent::Line { .. })) {
        let p = dev.next_output(Duration::from_secs(5)).await.unwrap();
        evs.extend(stream.on_data(&p, std::time::Instant::now()).unwrap());
    }
    let OutputEvent::Gap { missed } = evs[0] else {
        panic!("a gap first: {evs:?}");
    };
    let OutputEvent::Line { seq, .. } = evs[1] else {
        panic!("then lines: {evs:?}");
    };
    assert_eq!(seq, resume + missed, "resumes right after what it missed");
    assert!(missed > 0, "{missed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_speaks_micro_otas_remoteio_is_called_with_its_json_lines() {
    // A uota device in legacy mode answers micro-ota's JSON-line RemoteIO on
    // its RemoteIO port, as micro-ota's runtime does on 2019.
    let rio_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env: &'static str = Box::leak(rio_port.to_string().into_boxed_str());
    let t = device_with_app(
        Setup {
            legacy: true,
            env: vec![("UOTA_SIM_REMOTEIO_PORT", env)],
            ..Setup::default()
        },
        1000,
    )
    .await;
    let mut c = Caller::new(
        Link::tcp(t.host(), t.port()),
        uota::device::ConnectOptions {
            protocol: uota::device::ProtocolChoice::MicroOta,
            ..t.options()
        },
        RemoteIoOptions {
            micro_ota_port: rio_port,
            ..RemoteIoOptions::default()
        },
    );
    let r = c.call("add", args(json!({"a": 1, "b": 2}))).await.unwrap();
    assert_eq!(r.value, 3);
    let e = c.call("nope", Map::new()).await.unwrap_err();
    assert_eq!(code_of(&e), "unknown_handler", "{e}");
    let e = c.call("boom", Map::new()).await.unwrap_err();
    assert!(e.to_string().contains("ValueError: boom"), "{e}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_speaks_micro_otas_remoteio_is_listened_to_through_its_print_lines() {
    // As above: a uota device in legacy mode streams its output as
    // micro-ota's {"t": "print"} lines on its RemoteIO port.
    let rio_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env: &'static str = Box::leak(rio_port.to_string().into_boxed_str());
    let t = device_with_app(
        Setup {
            legacy: true,
            env: vec![("UOTA_SIM_REMOTEIO_PORT", env)],
            ..Setup::default()
        },
        50,
    )
    .await;
    let connect = uota::device::ConnectOptions {
        protocol: uota::device::ProtocolChoice::MicroOta,
        ..t.options()
    };
    let evs = listen_until_with(&t, connect, rio_port, |v| ticks(v).len() >= 10).await;
    let got = ticks(&evs);
    assert!(got.len() >= 10, "{evs:?}");
    // Numbered from 0 in order, the ticks consecutive: nothing lost or doubled.
    for (i, w) in got.windows(2).enumerate() {
        assert_eq!(w[1].0, w[0].0 + 1, "seq at {i}: {got:?}");
        assert_eq!(w[1].1, w[0].1 + 1, "tick at {i}: {got:?}");
    }
    assert!(
        !evs.iter()
            .any(|e| matches!(e, OutputEvent::LinkDown { .. })),
        "{evs:?}"
    );
    // The device still serves OTA meanwhile.
    t.connect().await.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_get_clear_errors_and_the_device_keeps_its_release() {
    let t = device_with_app(Setup::default(), 1000).await;
    let mut raw = common::RawClient::connect(&t, true).await;
    for (req, code) in [
        (
            json!({"op": "call", "id": "a", "name": "add", "args": "not an object"}),
            "bad_request",
        ),
        (
            json!({"op": "call", "id": 5, "name": "add", "args": {}}),
            "bad_request",
        ),
        (
            json!({"op": "call", "id": "x".repeat(65), "name": "add", "args": {}}),
            "bad_request",
        ),
        (json!({"op": "call", "id": "b", "args": {}}), "bad_request"),
    ] {
        raw.req(req.clone()).await;
        let r = raw.response().await.expect("a reply");
        assert_eq!(r["err"], code, "{req}: {r}");
    }
    // Bytes that are not JSON, in a request frame.
    raw.frame(
        uota::protocol::FrameType::Request,
        b"{\"op\": \"call\", \"args\": {nope",
    )
    .await
    .unwrap();
    let r = raw.response().await.expect("a reply");
    assert_eq!(r["err"], "bad_request", "{r}");
    // A request larger than the device's frames: refused, connection closed.
    let huge = json!({"op": "call", "id": "c", "name": "add", "args": {"a": "y".repeat(20_000)}});
    raw.req(huge).await;
    let r = raw.response().await.expect("a reply");
    assert_eq!(r["err"], "too_large", "{r}");
    // The device still serves: a call, then a push.
    let mut c = caller(&t, Link::tcp(t.host(), t.port()));
    assert_eq!(
        c.call("add", args(json!({"a": 1, "b": 1})))
            .await
            .unwrap()
            .value,
        2
    );
    c.close().await;
    t.push_project("1.0.1")
        .await
        .expect("a push after bad calls");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_calls_work_over_a_serial_console_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (host, port) = common::unique_addr();
    let sim = uota::sim::SimOptions::folder(tmp.path().join("board"), &host, port);
    uota::sim::provision(&sim).await.unwrap();
    let board = uota::sim::VirtualSerialDevice::start(uota::sim::SerialSimOptions::booting(&sim))
        .await
        .unwrap();
    let link = Link::Serial {
        path: Some(board.path().display().to_string()),
        baud: 115_200,
    };
    let mut c = Caller::new(
        link,
        uota::device::ConnectOptions::default(),
        RemoteIoOptions::default(),
    );
    assert_eq!(c.call("ping", Map::new()).await.unwrap().value, "pong");
    let info = c.call("info", Map::new()).await.unwrap().value;
    assert_eq!(info["platform"], "linux", "{info}");
    let e = c.call("set_led", Map::new()).await.unwrap_err();
    assert_eq!(
        code_of(&e),
        "unknown_handler",
        "the app does not run during a console session: {e}"
    );
    c.close().await;
    board.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_listener_is_told_how_many_lines_it_missed() {
    let t = start(Setup::default()).await;
    // Long lines, fast: far more than the kernel's buffers hold in a few seconds.
    std::fs::write(
        t.project.join("main.py"),
        "import asyncio\n\nasync def run():\n    n = 0\n    pad = 'x' * 200\n    while True:\n        print('tick', n, pad)\n        n += 1\n        await asyncio.sleep_ms(1)\n",
    )
    .unwrap();
    t.push_project("1.0.0").await.unwrap();
    let mut dev = t.connect().await;
    let boot = dev.listen(0, None, Duration::from_secs(1)).await.unwrap();
    let mut stream = uota::remoteio::OutputStream::new(Duration::from_secs(30));
    stream.on_listen_reply(boot, std::time::Instant::now());
    let p = dev.next_output(Duration::from_secs(5)).await.unwrap();
    stream.on_data(&p, std::time::Instant::now()).unwrap();
    // Stop reading for a while: the device's ring overruns this listener.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut missed = 0;
    let mut lines = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while missed == 0 && tokio::time::Instant::now() < deadline {
        let p = dev.next_output(Duration::from_secs(5)).await.unwrap();
        for ev in stream.on_data(&p, std::time::Instant::now()).unwrap() {
            match ev {
                OutputEvent::Gap { missed: n } => missed += n,
                OutputEvent::Line { .. } => lines += 1,
                _ => {}
            }
        }
    }
    assert!(missed > 0, "a gap was reported after {lines} lines");
}

/// The output ring itself, on MicroPython: tests/device/remoteio_ring.py.
#[test]
fn the_output_ring_reads_back_in_order_across_wrap_arounds() {
    let dir = tempfile::tempdir().unwrap();
    for f in uota::templates::render_runtime(&uota::templates::RuntimeSettings::default()).unwrap()
    {
        let dest = dir.path().join(&f.path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, &f.contents).unwrap();
    }
    let script = common::repo().join("tests/device/remoteio_ring.py");
    std::fs::copy(&script, dir.path().join("ring.py")).unwrap();
    let out = std::process::Command::new(uota::sim::find_micropython().unwrap())
        .arg("ring.py")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ring ok"), "{text}");
}
