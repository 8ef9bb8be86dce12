//! The high-level client: connect to a device, run commands, push releases.
//!
//! [`Device`] is async (tokio) and works over any [`Transport`];
//! [`BlockingDevice`] wraps it for synchronous callers. Every command has a
//! timeout ([`ConnectOptions::timeout`]). A device that runs micro-ota's
//! runtime instead of uota's is detected and driven with micro-ota's own
//! protocol (see `docs/protocol.md` §6).

mod blocking;
mod commands;
mod link;
mod micro_ota;
mod push;
mod remoteio;
mod serial;
mod uota;

pub use crate::transport::link::Capabilities;
pub use blocking::BlockingDevice;
pub use link::{Link, LinkChoice, LinkKind};
pub use push::{MicroOtaMethod, PushEvent, PushOptions, PushReport};
pub use remoteio::CallReply;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::auth::{self, AuthMethod, FleetKey, Password, PasswordKdf, SigningKey};
use crate::error::{Error, Result};
use crate::protocol::credit::CreditWindow;
use crate::protocol::session::SessionBinding;
use crate::protocol::{
    self, frame, line, Event, Frame, FrameType, Hello, Mode, Request, Response, StreamDecoder,
};
use crate::transport::BoxTransport;

/// Which protocol to speak with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolChoice {
    /// Probe: uota's protocol when the device answers the hello, else
    /// micro-ota's — but only without a password: `auto` never sends the
    /// plaintext password line (a device that answers the hello with
    /// `denied` is an error that names [`ProtocolChoice::MicroOta`]).
    #[default]
    Auto,
    /// Only uota's protocol; a device that does not answer the hello is an error.
    Uota,
    /// Only micro-ota's line protocol (for devices running micro-ota's
    /// runtime). Its login sends the password in plaintext: choose it only
    /// for a device known to run micro-ota.
    MicroOta,
}

impl ProtocolChoice {
    /// `auto` (or empty), `uota` or `micro-ota`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for anything else.
    pub fn parse(name: &str) -> Result<ProtocolChoice> {
        match name {
            "uota" => Ok(ProtocolChoice::Uota),
            "micro-ota" => Ok(ProtocolChoice::MicroOta),
            "auto" | "" => Ok(ProtocolChoice::Auto),
            other => Err(Error::InvalidArgument(format!(
                "protocol {other:?} (\"protocol\" in config/ota.json or --protocol): use auto, uota or micro-ota"
            ))),
        }
    }
}

/// The largest file [`Device::get`] accepts (no board has a bigger flash).
pub const MAX_GET_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes per second below which a `get` runs out of time (on top of the command timeout).
pub const GET_MIN_RATE: u64 = 4 * 1024;

/// How to connect and how long to wait.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed to open the connection.
    pub connect_timeout: Duration,
    /// How long a TCP connect keeps trying while the device refuses
    /// connections (it is restarting, say). Zero: one attempt.
    pub connect_retry: Duration,
    /// Time allowed for each command's reply.
    pub timeout: Duration,
    /// Time allowed for a commit (staged files moved into place).
    pub commit_timeout: Duration,
    /// The device's OTA password, if it has one.
    pub password: Option<Password>,
    /// Protocol selection.
    pub protocol: ProtocolChoice,
    /// The device's signing key: proves the host to a device that has a key
    /// but no password (state-changing commands need it there).
    pub signing_key: Option<SigningKey>,
    /// A fleet key: the device's signing key is derived from it and the id in
    /// its hello (used when `signing_key` is `None`).
    pub fleet_key: Option<FleetKey>,
    /// Flow control of an OTA session on a serial console (the device's
    /// credit, docs/protocol.md "Flow control"). `None` chooses from the
    /// link: [`CreditWindow::UART`] on a link without flow control of its
    /// own (a USB-to-UART bridge), no credit on one that has it (a native
    /// USB console, a pseudo-terminal), where round trips would only slow
    /// the push down.
    pub console_credit: Option<CreditWindow>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            connect_retry: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(120),
            password: None,
            protocol: ProtocolChoice::Auto,
            signing_key: None,
            fleet_key: None,
            console_credit: None,
        }
    }
}

impl ConnectOptions {
    /// The options a project gives: its password, signing or fleet key,
    /// and its `protocol` (default timeouts).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a `protocol` other than `auto`,
    /// `uota` or `micro-ota`.
    pub fn for_project(project: &crate::config::Project) -> Result<ConnectOptions> {
        Ok(ConnectOptions {
            password: project.secrets.ota_password.clone(),
            protocol: ProtocolChoice::parse(project.config.protocol.as_deref().unwrap_or("auto"))?,
            signing_key: project.secrets.signing_key.clone(),
            fleet_key: project.secrets.fleet_key.clone(),
            ..ConnectOptions::default()
        })
    }

    /// The signing key of the device with id `device_id`: the configured key,
    /// else the one derived from the fleet key.
    pub fn key_for(&self, device_id: &str) -> Option<SigningKey> {
        match (&self.signing_key, &self.fleet_key) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(f)) if !device_id.is_empty() => Some(f.derive(device_id)),
            _ => None,
        }
    }
}

/// The protocol the connected device speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A uota device; its hello.
    Uota(Box<Hello>),
    /// A device running micro-ota's runtime.
    MicroOta,
}

/// One entry of a device folder listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Name within the folder.
    pub name: String,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Size in bytes (0 for folders, and when the device does not say).
    pub size: u64,
}

/// What a device reports about itself and its release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Version of the active release.
    #[serde(default)]
    pub version: String,
    /// Every other field the device reported (platform, mpy, memory, boot state …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The release fields of a device's `info` answer (its `release` object):
/// what is active, whether it is confirmed, and the last rollback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseState {
    /// Version of the active release (the info's `version` when the device
    /// does not say).
    pub active: String,
    /// `pending` (on probation, not confirmed yet) or `confirmed`.
    pub state: String,
    /// Boots of the pending release so far (0 when confirmed or unknown).
    pub attempts: u64,
    /// The last rollback as the device recorded it (`from`, `reason` …).
    pub last_rollback: Option<serde_json::Value>,
}

impl ReleaseState {
    /// The reason of the last rollback, when the device recorded one.
    pub fn rollback_reason(&self) -> Option<&str> {
        self.last_rollback.as_ref()?.get("reason")?.as_str()
    }
}

impl DeviceInfo {
    /// The typed view of the `release` object of this answer; an older
    /// runtime without one reads as its version, confirmed.
    pub fn release(&self) -> ReleaseState {
        let release = self.extra.get("release");
        let field = |k: &str| release.and_then(|r| r.get(k));
        let text = |k: &str| field(k).and_then(|v| v.as_str()).map(str::to_string);
        ReleaseState {
            active: text("active").unwrap_or_else(|| self.version.clone()),
            state: text("state").unwrap_or_else(|| "confirmed".into()),
            attempts: field("attempts").and_then(|v| v.as_u64()).unwrap_or(0),
            last_rollback: field("last_rollback").filter(|v| !v.is_null()).cloned(),
        }
    }
}

fn denied_hello(target: &str) -> Error {
    Error::Auth(format!(
        "{target} answered the uota hello with `denied`: it runs micro-ota's runtime with a password (or something on the path pretends to). \
uota sends a plaintext password only when told this device speaks micro-ota's protocol: pass --protocol micro-ota, or set \"protocol\": \"micro-ota\" in config/ota.json"
    ))
}

fn missing_password() -> Error {
    Error::Auth(
        "the device requires a password: set otaPassword in config/.ota.secrets.json or pass --password".into(),
    )
}

/// A connection to one device.
pub struct Device {
    io: BoxTransport,
    decoder: StreamDecoder,
    peer: Peer,
    opts: ConnectOptions,
    target: String,
    closed: bool,
    read_buf: Vec<u8>,
    bytes_out: u64,
    bytes_in: u64,
    /// The session runs on a REPL console (serial), not a connection of its own.
    console: bool,
    /// The device's credit on a serial console session, when it grants it.
    console_credit: Option<CreditWindow>,
    /// After `auth`: seals state-changing requests to this session.
    binding: Option<SessionBinding>,
    /// Where the device was reached (to reconnect after a restart).
    link: Option<Link>,
    /// What that link guarantees.
    capabilities: Capabilities,
    /// Set when a push was dropped part-way (cancelled): the connection may
    /// hold half a frame and queued requests, so it is torn down with a
    /// reset before anything else is done.
    interrupted: Arc<AtomicBool>,
}

/// Marks a push in progress; dropped before [`PushGuard::done`] (the push
/// future was dropped) it flags the connection as interrupted.
pub(crate) struct PushGuard(Arc<AtomicBool>, bool);

impl PushGuard {
    pub(crate) fn done(mut self) {
        self.1 = true;
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// What is left of a connection after [`Device::cancel`]: every read and
/// write fails.
struct Aborted;

impl tokio::io::AsyncRead for Aborted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }
}

impl tokio::io::AsyncWrite for Aborted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl crate::transport::Transport for Aborted {
    fn peer(&self) -> String {
        "(cancelled connection)".into()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.interrupted.load(Ordering::SeqCst) {
            self.io.abort();
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("target", &self.target)
            .field("peer", &self.peer)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Connect again to where this device was reached (after it restarted):
    /// reopens the same [`Link`] and retries until the device answers the
    /// handshake, for at most `within`. The new connection replaces this one
    /// (over a serial console the port is released first, and the new
    /// session interrupts the board's program as [`Device::open`] does).
    /// Returns how long it took.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a device not opened from a link (a
    /// hand-made transport); [`Error::Timeout`] when it does not answer
    /// within `within`; authentication errors at once.
    pub async fn reconnect(&mut self, within: Duration) -> Result<Duration> {
        let Some(link) = self.link.clone() else {
            return Err(Error::InvalidArgument(
                "only a device opened from a link (tcp://…, serial://…) can be reconnected to"
                    .into(),
            ));
        };
        if link.is_serial() {
            // The port is opened exclusively: let go of it first.
            let _ = std::mem::replace(&mut self.io, Box::new(Aborted));
            self.closed = true;
        }
        let start = Instant::now();
        let deadline = start + within;
        loop {
            let opts = ConnectOptions {
                connect_retry: Duration::ZERO,
                connect_timeout: self.opts.connect_timeout.min(within),
                ..self.opts.clone()
            };
            match Device::open(&link, opts).await {
                Ok(dev) => {
                    let _ = std::mem::replace(self, dev);
                    return Ok(start.elapsed());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::ErrorKind::Transport | crate::ErrorKind::Timeout
                    ) && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "device not back yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        what: format!("waiting for {link} to answer again ({e})"),
                        after: within,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tear the connection down at once, discarding whatever is still queued
    /// for the device (a TCP reset): the way to cancel a push. The device
    /// drops the connection's session at once; what it had staged stays
    /// resumable. Later commands on this `Device` fail; reconnect with
    /// [`Device::reconnect`] or open a new one.
    pub fn cancel(&mut self) {
        self.io.abort();
        let _ = std::mem::replace(&mut self.io, Box::new(Aborted));
        self.closed = true;
        self.interrupted.store(false, Ordering::SeqCst);
    }

    /// Whether this device can be reached again without disturbing it: a
    /// link of its own (TCP). Reconnecting over a serial console interrupts
    /// the board's program, so a push never does it on its own.
    pub(crate) fn reconnectable(&self) -> bool {
        self.link.as_ref().is_some_and(|l| !l.is_serial())
    }

    /// Read and drop whatever comes until the device closes the connection
    /// (or `within` passes): it is going down for a reset.
    pub(crate) async fn wait_for_close(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut self.read_buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => break,
            }
        }
        self.closed = true;
    }

    /// Mark a push in progress (see [`PushGuard`]).
    pub(crate) fn push_guard(&self) -> PushGuard {
        PushGuard(self.interrupted.clone(), false)
    }

    /// A device on `io` before any handshake.
    fn unopened(io: BoxTransport, opts: ConnectOptions) -> Device {
        let target = io.peer();
        Device {
            io,
            decoder: StreamDecoder::new(),
            peer: Peer::MicroOta,
            opts,
            target,
            closed: false,
            read_buf: vec![0; 64 * 1024],
            bytes_out: 0,
            bytes_in: 0,
            console: false,
            console_credit: None,
            binding: None,
            link: None,
            capabilities: Capabilities::STREAM,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Say hello on an open transport and read the reply, without
    /// authenticating: what a device tells anyone (discovery). A device that
    /// answers as micro-ota's runtime does (`unknown`, or `denied` with a
    /// password) is [`Peer::MicroOta`].
    ///
    /// # Errors
    ///
    /// Transport errors, [`Error::Timeout`] after `wait`, and
    /// [`Error::Protocol`] for a peer that answers anything else (not a
    /// device).
    pub async fn probe(io: BoxTransport, wait: Duration) -> Result<Peer> {
        let opts = ConnectOptions {
            timeout: wait,
            ..ConnectOptions::default()
        };
        let mut dev = Device::unopened(io, opts);
        dev.send(&line::encode(protocol::HELLO_LINE)).await?;
        dev.flush().await?;
        let reply = dev.read_line("hello").await?;
        dev.mark_closed();
        match Hello::parse(&reply)? {
            Some(hello) => Ok(Peer::Uota(Box::new(hello))),
            None if reply == "unknown" || reply == "denied" => Ok(Peer::MicroOta),
            None => Err(Error::Protocol(format!(
                "{} is not a uota or micro-ota device (it answered the hello with {:?})",
                dev.target,
                crate::text::escape_controls(&reply.chars().take(40).collect::<String>())
            ))),
        }
    }

    /// Perform the handshake over an already open transport.
    pub async fn handshake(io: BoxTransport, opts: ConnectOptions) -> Result<Device> {
        let mut dev = Device::unopened(io, opts);
        if dev.opts.protocol == ProtocolChoice::MicroOta {
            micro_ota::login(&mut dev).await?;
            return Ok(dev);
        }
        dev.send(&line::encode(protocol::HELLO_LINE)).await?;
        dev.flush().await?;
        let mut reply = dev.read_line("hello").await?;
        if reply == "unknown" && dev.opts.protocol == ProtocolChoice::Uota {
            // A uota device that did not take the line as a hello: on a
            // console, bytes left over from the REPL can precede it. Once more.
            tracing::debug!(target = %dev.target, "hello answered `unknown`; sending it again");
            dev.send(&line::encode(protocol::HELLO_LINE)).await?;
            dev.flush().await?;
            reply = dev.read_line("hello").await?;
        }
        match Hello::parse(&reply)? {
            Some(hello) => {
                dev.decoder.set_mode(Mode::Frames);
                dev.peer = Peer::Uota(Box::new(hello));
                dev.authenticate().await?;
                Ok(dev)
            }
            None if dev.opts.protocol == ProtocolChoice::Uota => Err(Error::Protocol(format!(
                "{} did not answer the uota hello (it said {:?})",
                dev.target,
                crate::text::escape_controls(&reply)
            ))),
            None if reply == "denied" => Err(denied_hello(&dev.target)),
            None if reply.starts_with("HTTP/") || reply.starts_with("<") => {
                Err(Error::Protocol(format!(
                    "{} is a web server (it answered {:?}), not a uota or micro-ota device: check the address and --port (the OTA port is 2018 by default)",
                    dev.target,
                    crate::text::escape_controls(&reply.chars().take(40).collect::<String>())
                )))
            }
            None => {
                tracing::info!(target = %dev.target, reply = %crate::text::escape_controls(&reply), "not a uota device; using micro-ota's protocol");
                dev.peer = Peer::MicroOta;
                Ok(dev)
            }
        }
    }

    /// Authenticate after the hello, when the device requires it for
    /// everything (it has a password): with the password, or else with the
    /// signing key when the device takes it. A device with only a key serves
    /// reads unauthenticated; the host proves the key on the first
    /// state-changing request instead ([`Device::request`]).
    async fn authenticate(&mut self) -> Result<()> {
        let hello = self.hello().cloned().unwrap_or_default();
        if !hello.auth {
            return Ok(());
        }
        if hello.accepts(AuthMethod::Password) {
            if let Some(password) = self.opts.password.clone() {
                let kdf = PasswordKdf::parse(&hello.kdf)?;
                let secret = password.secret(&kdf);
                return self.prove(AuthMethod::Password, &secret).await;
            }
        }
        if hello.accepts(AuthMethod::Key) {
            if let Some(key) = self.opts.key_for(&hello.id) {
                return self.prove(AuthMethod::Key, key.as_bytes()).await;
            }
        }
        Err(missing_password())
    }

    /// Prove `key` to a device that takes its signing key in `auth`, unless
    /// this session is already authenticated. Pushes and key rotation call
    /// it with the key they sign with.
    pub(crate) async fn authenticate_with_key(&mut self, key: &SigningKey) -> Result<()> {
        let accepts = self.hello().is_some_and(|h| h.accepts(AuthMethod::Key));
        if self.binding.is_some() || !accepts {
            return Ok(());
        }
        self.prove(AuthMethod::Key, key.as_bytes()).await
    }

    async fn prove(&mut self, method: AuthMethod, secret: &[u8]) -> Result<()> {
        let (nonce, id) = match self.hello() {
            Some(h) => (h.nonce.clone(), h.id.clone()),
            None => return Ok(()),
        };
        let mac = auth::challenge_response(method, secret, &nonce, &id);
        let req = Request::Auth {
            mac,
            with: method.as_str().into(),
        };
        self.send_request(&req).await?;
        self.flush().await?;
        let res = self.read_response("auth", self.opts.timeout).await;
        if res.is_err() {
            // A device closes the connection after a failed auth.
            self.closed = true;
        }
        match res {
            Ok(_) => {
                self.binding = Some(SessionBinding::new(auth::session_key(secret, &nonce, &id)));
                Ok(())
            }
            // The device does not hold this key: the same error as a release
            // signed with the wrong key.
            Err(Error::Auth(msg)) if method == AuthMethod::Key => Err(Error::SignatureMismatch(
                format!("the device does not hold this signing key ({msg})"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Whether this session authenticated (and so seals its state-changing requests).
    pub fn is_authenticated(&self) -> bool {
        self.binding.is_some()
    }

    /// The protocol the device speaks.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The options this connection was opened with (to open another one
    /// like it).
    pub fn connect_options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// The address or port name of the device.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Bytes written to the device so far on this connection.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_out
    }

    /// Bytes read from the device so far on this connection.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_in
    }

    /// The device's id as its hello reported it (empty for micro-ota devices).
    pub fn device_id(&self) -> &str {
        self.hello().map(|h| h.id.as_str()).unwrap_or("")
    }

    /// The highest release number the device had accepted when this
    /// connection opened (0 for none, and for micro-ota devices).
    pub fn highest_release(&self) -> u64 {
        self.hello().map(|h| h.release).unwrap_or(0)
    }

    // ----- plumbing -----

    fn ensure_open(&mut self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            self.cancel();
            return Err(Error::ConnectionClosed {
                during: "a command after a cancelled push (the connection was reset; reconnect)"
                    .into(),
            });
        }
        if self.closed {
            Err(Error::ConnectionClosed {
                during: "a command after the device reset".into(),
            })
        } else {
            Ok(())
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.ensure_open()?;
        let after = self.opts.timeout;
        let target = self.target.clone();
        tokio::time::timeout(after, self.io.write_all(bytes))
            .await
            .map_err(|_| Error::Timeout {
                what: "writing to the device".into(),
                after,
            })?
            .map_err(|source| Error::Transport { target, source })?;
        self.bytes_out += bytes.len() as u64;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<()> {
        let target = self.target.clone();
        self.io
            .flush()
            .await
            .map_err(|source| Error::Transport { target, source })
    }

    pub(crate) async fn send_frame(&mut self, kind: FrameType, payload: &[u8]) -> Result<()> {
        let bytes = frame::encode_to_vec(kind, payload);
        self.send(&bytes).await
    }

    async fn next_event(&mut self, what: &str, wait: Duration) -> Result<Event> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(ev) = self.decoder.poll_event()? {
                return Ok(ev);
            }
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut self.read_buf))
                .await
                .map_err(|_| Error::Timeout {
                    what: what.to_string(),
                    after: wait,
                })?
                .map_err(|source| Error::Transport {
                    target: self.target.clone(),
                    source,
                })?;
            if n == 0 {
                self.closed = true;
                return Err(Error::ConnectionClosed {
                    during: what.to_string(),
                });
            }
            self.bytes_in += n as u64;
            self.decoder.feed(&self.read_buf[..n]);
        }
    }

    pub(crate) async fn read_line(&mut self, what: &str) -> Result<String> {
        self.read_line_within(what, self.opts.timeout).await
    }

    /// Read one line, waiting at most `wait`.
    pub(crate) async fn read_line_within(&mut self, what: &str, wait: Duration) -> Result<String> {
        match self.next_event(what, wait).await? {
            Event::Line(l) => Ok(l),
            other => Err(Error::Protocol(format!(
                "expected a line during {what}, got {other:?}"
            ))),
        }
    }

    /// Read exactly `n` raw bytes, waiting at most `wait`.
    pub(crate) async fn read_raw_within(
        &mut self,
        n: usize,
        what: &str,
        wait: Duration,
    ) -> Result<Vec<u8>> {
        self.decoder.set_mode(Mode::Raw(n));
        match self.next_event(what, wait).await? {
            Event::Raw(b) => Ok(b),
            other => Err(Error::Protocol(format!(
                "expected raw bytes during {what}, got {other:?}"
            ))),
        }
    }

    async fn read_frame(&mut self, what: &str, wait: Duration) -> Result<Frame> {
        match self.next_event(what, wait).await? {
            Event::Frame(f) => Ok(f),
            other => Err(Error::Protocol(format!(
                "expected a frame during {what}, got {other:?}"
            ))),
        }
    }

    pub(crate) async fn read_response(&mut self, op: &str, wait: Duration) -> Result<Response> {
        let f = self.read_frame(op, wait).await?;
        if f.kind != FrameType::Response {
            return Err(Error::Protocol(format!(
                "expected a reply to {op}, got a {:?} frame",
                f.kind
            )));
        }
        Response::parse(op, &f.payload)
    }

    /// The payload of `req` for this session: sealed to it when the request
    /// changes state and the session authenticated.
    pub(crate) fn encode_request(&mut self, req: &Request) -> Vec<u8> {
        match &mut self.binding {
            Some(b) => b.encode(req),
            None => req.to_json(),
        }
    }

    /// Send a request (sealed when it must be) without waiting for a reply.
    pub(crate) async fn send_request(&mut self, req: &Request) -> Result<()> {
        let payload = self.encode_request(req);
        self.send_frame(FrameType::Request, &payload).await
    }

    /// Send a request and wait for its reply. A state-changing request to a
    /// device that takes its signing key first proves the configured key.
    pub(crate) async fn request(&mut self, req: &Request) -> Result<Response> {
        if req.changes_state() && self.binding.is_none() {
            if let Some(key) = self.opts.key_for(self.device_id()) {
                self.authenticate_with_key(&key).await?;
            }
        }
        self.send_request(req).await?;
        self.flush().await?;
        let res = self.read_response(req.op(), self.opts.timeout).await;
        if let Err(Error::Auth(_)) = &res {
            self.closed = true;
        }
        res
    }

    async fn read_data_stream(&mut self, op: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let f = self.read_frame(op, self.opts.timeout).await?;
            match f.kind {
                FrameType::Data if f.payload.is_empty() => return Ok(out),
                FrameType::Data => out.extend_from_slice(&f.payload),
                FrameType::Response => {
                    Response::parse(op, &f.payload)?;
                    return Err(Error::Protocol(format!(
                        "unexpected reply inside {op} data"
                    )));
                }
                FrameType::Request => {
                    return Err(Error::Protocol(format!(
                        "device sent a request during {op}"
                    )))
                }
            }
        }
    }

    /// After a failed write, the device has usually said why before closing:
    /// read that reply if it is there, else keep the original error.
    pub(crate) async fn explain_failure(&mut self, op: &str, original: Error) -> Error {
        self.closed = false;
        let res = self.read_response(op, Duration::from_secs(2)).await;
        self.closed = true;
        match res {
            Err(
                e @ (Error::Device { .. }
                | Error::SignatureMismatch(_)
                | Error::HashMismatch { .. }
                | Error::InvalidPath { .. }
                | Error::Auth(_)),
            ) => e,
            _ => original,
        }
    }

    pub(crate) fn hello(&self) -> Option<&Hello> {
        match &self.peer {
            Peer::Uota(h) => Some(h),
            Peer::MicroOta => None,
        }
    }

    pub(crate) fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    pub(crate) fn mark_closed(&mut self) {
        self.closed = true;
    }
}
