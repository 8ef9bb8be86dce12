//! Shared helpers for integration tests: virtual devices and starter projects.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use uota::auth::{Password, SigningKey};
use uota::bundle::Bundle;
use uota::config::Project;
use uota::device::{ConnectOptions, Device};
use uota::sim::{SimOptions, Storage, VirtualDevice};

#[cfg(feature = "cli")]
pub mod cli;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback address and free port unique to this test.
pub fn unique_addr() -> (String, u16) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let bin = std::process::id() % 200;
    let host = format!("127.0.{}.{}", 20 + bin, 2 + n % 250);
    let port = std::net::TcpListener::bind((host.as_str(), 0))
        .expect("bind loopback")
        .local_addr()
        .unwrap()
        .port();
    (host, port)
}

/// The project in `dir`, and what a push of it in `mode` sends, as the
/// release `version`.
pub fn project_bundle(dir: &Path, mode: uota::PushMode, version: &str) -> (Project, Bundle) {
    let project = Project::load(dir).unwrap();
    let mut bundle = Bundle::for_project(&project, mode).unwrap();
    bundle.set_version(version);
    (project, bundle)
}

/// A virtual device plus the temp folders it lives in.
pub struct TestDevice {
    pub dev: VirtualDevice,
    pub root: PathBuf,
    pub project: PathBuf,
    pub password: Option<Password>,
    pub key: Option<SigningKey>,
    _tmp: tempfile::TempDir,
}

/// What a test device is set up with.
#[derive(Default, Clone)]
pub struct Setup {
    pub password: Option<&'static str>,
    pub key: Option<&'static str>,
    pub legacy: bool,
    pub image: bool,
    /// The device id the virtual device reports (default: derived from its address).
    pub device_id: Option<&'static str>,
    /// The runtime's idle timeout in seconds (default 30).
    pub session_timeout: Option<u32>,
    /// Keys set in the device's `config/ota.json` before its first boot
    /// (as an owner provisions a board; folder storage only).
    pub device_config: Vec<(&'static str, serde_json::Value)>,
    /// MicroPython heap size (`-X heapsize=`), e.g. `"256k"` for a board-sized heap.
    pub heap_size: Option<&'static str>,
    /// How the runtime is installed (default: `.py` source).
    pub runtime_code: uota::sim::RuntimeCode,
    /// The image's size with `image` (default: a 4 MB board's 1.4 MB).
    pub image_size: Option<u64>,
    /// Extra environment of the interpreter (the boot shim's test knobs).
    pub env: Vec<(&'static str, &'static str)>,
}

pub async fn start(setup: Setup) -> TestDevice {
    // A port that something took between choosing it and the device's start
    // (the device then refuses it): choose another.
    for _ in 0..3 {
        match try_start(&setup).await {
            Ok(t) => return t,
            Err(uota::Error::InvalidArgument(m)) if m.contains("already in use") => {
                eprintln!("{m}; another address");
            }
            Err(e) => panic!("virtual device starts: {e:?}"),
        }
    }
    panic!("no free loopback port in three tries");
}

async fn try_start(setup: &Setup) -> uota::Result<TestDevice> {
    let setup = setup.clone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("device");
    let (host, port) = unique_addr();
    let mut opts = SimOptions::folder(&root, &host, port);
    if setup.image {
        opts.storage = Storage::Image {
            path: tmp.path().join("flash.img"),
            size: setup.image_size.unwrap_or(uota::sim::DEFAULT_IMAGE_SIZE),
        };
    }
    opts.runtime_code = setup.runtime_code;
    for (k, v) in &setup.env {
        opts.env.push((k.to_string(), v.to_string()));
    }
    opts.password = setup.password.map(Password::new);
    opts.signing_key = setup.key.map(SigningKey::new);
    opts.legacy = setup.legacy;
    opts.heap_size = setup.heap_size.map(str::to_string);
    opts.log = Some(tmp.path().join("device.log"));
    if let Some(id) = setup.device_id {
        opts.env.push(("UOTA_SIM_ID".into(), id.into()));
    }
    if let Some(secs) = setup.session_timeout {
        opts.settings.session_timeout = secs;
    }
    if !setup.device_config.is_empty() {
        assert!(!setup.image, "device_config needs folder storage");
        uota::sim::provision(&opts).await.expect("provision");
        let path = root.join("config/ota.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for (k, v) in &setup.device_config {
            cfg[*k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    }
    let dev = VirtualDevice::start(opts).await?;
    let project = tmp.path().join("project");
    copy_tree(&repo().join("examples/starter"), &project);
    let cfg_path = project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hostname"] = host.clone().into();
    cfg["port"] = port.into();
    if setup.legacy {
        // The pushed config keeps the device in legacy mode for later pushes.
        cfg["legacy"] = true.into();
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    std::fs::write(
        project.join("config/.ota.secrets.json"),
        serde_json::to_vec(&serde_json::json!({
            "otaPassword": setup.password.unwrap_or(""),
            "signingKey": setup.key.unwrap_or(""),
        }))
        .unwrap(),
    )
    .unwrap();
    Ok(TestDevice {
        dev,
        root,
        project,
        password: setup.password.map(Password::new),
        key: setup.key.map(SigningKey::new),
        _tmp: tmp,
    })
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

impl TestDevice {
    pub fn host(&self) -> &str {
        self.dev.host()
    }

    pub fn port(&self) -> u16 {
        self.dev.port()
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            password: self.password.clone(),
            signing_key: self.key.clone(),
            timeout: Duration::from_secs(10),
            ..ConnectOptions::default()
        }
    }

    /// Connect, retrying while the device reboots.
    pub async fn connect(&self) -> Device {
        self.connect_with(self.options()).await.expect("connect")
    }

    pub async fn connect_with(&self, opts: ConnectOptions) -> uota::Result<Device> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match Device::connect_tcp(self.host(), self.port(), opts.clone()).await {
                Ok(d) => return Ok(d),
                Err(e)
                    if tokio::time::Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            uota::ErrorKind::Transport | uota::ErrorKind::Timeout
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A full push of the project, as the release `version`, with the
    /// project's own push options.
    pub async fn push_project(&self, version: &str) -> uota::Result<uota::device::PushReport> {
        let (project, bundle) = project_bundle(&self.project, uota::PushMode::Full, version);
        let opts = uota::device::PushOptions::for_project(&project, uota::PushMode::Full);
        self.connect()
            .await
            .push_bundle(&bundle, &opts, &mut |_| {})
            .await
    }

    /// Poll `info` until `check` accepts it (the device may be rebooting
    /// meanwhile); its info as JSON. Panics with the last info and the
    /// device's log after 60 s.
    pub async fn wait_info(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last = serde_json::Value::Null;
        while tokio::time::Instant::now() < deadline {
            let opts = ConnectOptions {
                timeout: Duration::from_secs(2),
                ..self.options()
            };
            if let Ok(mut dev) = self.connect_with(opts).await {
                if let Ok(info) = dev.info().await {
                    let v = serde_json::to_value(&info).unwrap();
                    if check(&v) {
                        return v;
                    }
                    last = v;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "device never reached: {what}; last info: {last}\nlog:\n{}",
            self.log()
        );
    }

    /// Wait until the device reports `version` (it reboots after a push).
    pub async fn wait_version(&self, version: &str) -> Device {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut d = self.connect().await;
            match d.version().await {
                Ok(v) if v == version => return d,
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("device never reported version {version}: {other:?}"),
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._tmp.path().join("device.log")).unwrap_or_default()
    }
}

/// Hashes of every file on the device, read over the wire, except paths `skip` names
/// (a skipped folder is not entered).
pub async fn wire_snapshot(
    t: &TestDevice,
    skip: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut dev = t.connect().await;
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let listing = dev
            .ls(if dir.is_empty() { "/" } else { &dir })
            .await
            .unwrap();
        for e in listing {
            let path = if dir.is_empty() {
                e.name.clone()
            } else {
                format!("{dir}/{}", e.name)
            };
            if skip(&path) {
                continue;
            }
            if e.is_dir {
                stack.push(path);
            } else {
                out.insert(path.clone(), sha256_hex(&dev.get(&path).await.unwrap()));
            }
        }
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    uota::auth::sha256_hex(data)
}

/// A raw protocol client for sending malformed or partial sessions.
pub struct RawClient {
    pub stream: tokio::net::TcpStream,
    conn: uota::protocol::StreamDecoder,
    /// The device's hello, when `connect` sent the hello line.
    pub hello: Option<uota::protocol::Hello>,
    /// After `auth`: the session key and the last sequence number used (seal).
    pub binding: Option<([u8; 32], u64)>,
}

impl RawClient {
    /// Connect and (optionally) send the hello line and switch to frames.
    pub async fn connect(t: &TestDevice, hello: bool) -> RawClient {
        let stream = tokio::net::TcpStream::connect((t.host(), t.port()))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = RawClient {
            stream,
            conn: uota::protocol::StreamDecoder::new(),
            hello: None,
            binding: None,
        };
        if hello {
            c.send_line("uota 1").await;
            let reply = c.line().await;
            let h = uota::protocol::Hello::parse(&reply)
                .unwrap()
                .expect("uota hello");
            c.conn.set_mode(uota::protocol::Mode::Frames);
            c.hello = Some(h.clone());
            // Authenticate as the owner would: the password, else the key.
            use uota::auth::AuthMethod;
            if let (true, Some(pw)) = (h.accepts(AuthMethod::Password), &t.password) {
                let kdf = uota::auth::PasswordKdf::parse(&h.kdf).unwrap();
                let secret = pw.secret(&kdf);
                c.authenticate(AuthMethod::Password, &secret).await;
            } else if let (true, Some(key)) = (h.accepts(AuthMethod::Key), &t.key) {
                c.authenticate(AuthMethod::Key, key.as_bytes()).await;
            } else {
                assert!(!h.auth, "device wants a password");
            }
        }
        c
    }

    /// Connect and send the hello, without authenticating.
    pub async fn connect_unauthenticated(t: &TestDevice) -> RawClient {
        let stream = tokio::net::TcpStream::connect((t.host(), t.port()))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = RawClient {
            stream,
            conn: uota::protocol::StreamDecoder::new(),
            hello: None,
            binding: None,
        };
        c.send_line("uota 1").await;
        let reply = c.line().await;
        let h = uota::protocol::Hello::parse(&reply)
            .unwrap()
            .expect("uota hello");
        c.conn.set_mode(uota::protocol::Mode::Frames);
        c.hello = Some(h);
        c
    }

    /// Prove `secret` with `method`; from then on state-changing requests
    /// sent with [`RawClient::req`] are sealed to the session.
    pub async fn authenticate(&mut self, method: uota::auth::AuthMethod, secret: &[u8]) {
        let h = self.hello.clone().expect("hello first");
        let mac = uota::auth::challenge_response(method, secret, &h.nonce, &h.id);
        let r = self
            .request(serde_json::json!({"op": "auth", "mac": mac, "with": method.as_str()}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        self.binding = Some((uota::auth::session_key(secret, &h.nonce, &h.id), 0));
    }

    /// Decode frames from now on (after a hello sent by hand).
    pub fn enter_frames(&mut self) {
        self.conn.set_mode(uota::protocol::Mode::Frames);
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    pub async fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes()).await.unwrap();
    }

    async fn event(&mut self) -> Option<uota::protocol::Event> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(ev) = self.conn.poll_event().expect("decodable reply") {
                return Some(ev);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("reply within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.conn.feed(&buf[..n]);
        }
    }

    pub async fn line(&mut self) -> String {
        match self.event().await {
            Some(uota::protocol::Event::Line(l)) => l,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    pub async fn frame(
        &mut self,
        kind: uota::protocol::FrameType,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let bytes = uota::protocol::frame::encode_to_vec(kind, payload);
        self.send(&bytes).await
    }

    /// Send a request; in an authenticated session, a state-changing one is
    /// sealed to it (seq + mac) as a uota host does.
    pub async fn req(&mut self, v: serde_json::Value) {
        let payload = self.seal(v);
        self.frame(uota::protocol::FrameType::Request, &payload)
            .await
            .unwrap();
    }

    /// Send a request exactly as given (never sealed).
    pub async fn req_raw(&mut self, v: serde_json::Value) {
        self.frame(uota::protocol::FrameType::Request, v.to_string().as_bytes())
            .await
            .unwrap();
    }

    /// The payload for `v`: sealed when this session is bound and the op changes state.
    pub fn seal(&mut self, v: serde_json::Value) -> Vec<u8> {
        let op = v["op"].as_str().unwrap_or("");
        let Some((key, seq)) = self.binding.as_mut() else {
            return v.to_string().into_bytes();
        };
        if !uota::protocol::message::STATE_OPS.contains(&op) {
            return v.to_string().into_bytes();
        }
        *seq += 1;
        uota::protocol::session::seal_value(key, *seq, v)
    }

    pub async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.frame(uota::protocol::FrameType::Data, bytes).await
    }

    /// The next reply, or `None` when the device closed the connection.
    pub async fn response(&mut self) -> Option<serde_json::Value> {
        match self.event().await {
            Some(uota::protocol::Event::Frame(f)) => {
                assert_eq!(f.kind, uota::protocol::FrameType::Response);
                Some(serde_json::from_slice(&f.payload).unwrap())
            }
            None => None,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Open a full push session for `m` (unsigned) and return the device's reply.
    pub async fn begin(&mut self, m: &uota::Manifest) -> serde_json::Value {
        let req = serde_json::json!({
            "op": "begin", "version": m.version, "mode": "full",
            "count": m.files.len(), "runtime": false,
        });
        self.begin_stream(req, &m.manifest_lines()).await
    }

    /// Send `begin` (sealed, with the manifest stream's digest when the
    /// session is bound), then `lines` and the end of the stream; the reply.
    pub async fn begin_stream(
        &mut self,
        mut begin: serde_json::Value,
        lines: &[u8],
    ) -> serde_json::Value {
        if self.binding.is_some() && begin.get("mdigest").is_none() {
            begin["mdigest"] = uota::auth::sha256_hex(lines).into();
        }
        self.req(begin).await;
        self.data(lines).await.unwrap();
        self.data(b"").await.unwrap();
        self.response().await.expect("a reply to begin")
    }

    pub async fn request(&mut self, v: serde_json::Value) -> serde_json::Value {
        self.req(v).await;
        self.response().await.expect("a reply")
    }
}

/// A TCP relay to a device that drops the link after `cut_after` bytes
/// from the host, as a WiFi link that goes away mid-push.
pub struct CutRelay {
    pub host: String,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl CutRelay {
    pub async fn start(t: &TestDevice, cut_after: u64) -> CutRelay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (host, port) = unique_addr();
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .unwrap();
        let target = (t.host().to_string(), t.port());
        let task = tokio::spawn(async move {
            // Serve connections one after another; each is cut at the same point.
            while let Ok((client, _)) = listener.accept().await {
                let Ok(device) =
                    tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut dr, mut dw) = device.into_split();
                let up = async {
                    let mut buf = vec![0u8; 4096];
                    let mut total = 0u64;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let allowed = (cut_after - total).min(n as u64) as usize;
                        if dw.write_all(&buf[..allowed]).await.is_err() {
                            return;
                        }
                        total += allowed as u64;
                        if total >= cut_after {
                            return; // the link drops here
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut dr, &mut cw).await;
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            }
        });
        CutRelay { host, port, task }
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
