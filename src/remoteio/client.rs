//! RemoteIO across link drops: calls resent with their id until answered,
//! and a listener that reconnects with backoff and resumes the output where
//! it left off.

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::device::{CallReply, ConnectOptions, Device, Link, Peer};
use crate::error::{Error, ErrorKind, Result};

use super::stream::{OutputEvent, OutputStream};

/// How calls and listeners behave.
#[derive(Debug, Clone)]
pub struct RemoteIoOptions {
    /// A listener declares the link dead after this long without a frame
    /// (the device sends a keepalive every quarter of it); default 10 s.
    pub outage_after: Duration,
    /// The time a call has, resends included (default 30 s).
    pub call_timeout: Duration,
    /// The first wait before reconnecting; it doubles up to 5 s.
    pub backoff: Duration,
    /// The RemoteIO port of a device that runs micro-ota's runtime (its
    /// `remoteioPort`, default 2019): calls to it go there as micro-ota's
    /// JSON lines.
    pub micro_ota_port: u16,
}

impl Default for RemoteIoOptions {
    fn default() -> Self {
        Self {
            outage_after: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            micro_ota_port: 2019,
        }
    }
}

fn is_link_failure(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Transport | ErrorKind::Timeout)
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(Duration::from_secs(5))
}

/// A new call id: random, so that no two hosts or runs share one.
pub fn new_call_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Calls to one device over one connection, reopened when the link drops.
pub struct Caller {
    /// `None`: a connection that cannot be reopened (not opened from a link).
    link: Option<Link>,
    connect: ConnectOptions,
    opts: RemoteIoOptions,
    dev: Option<Device>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Calls to the device at `link`.
    pub fn new(link: Link, connect: ConnectOptions, opts: RemoteIoOptions) -> Self {
        Self {
            link: Some(link),
            connect,
            opts,
            dev: None,
        }
    }

    /// Calls over `dev`, a connection already open; after a link drop the
    /// link it was opened on is reopened with the options it was opened
    /// with. [`Caller::into_device`] gives the connection back, to go on
    /// using it for other requests.
    pub fn with_device(dev: Device, opts: RemoteIoOptions) -> Self {
        Self {
            link: dev.link().cloned(),
            connect: dev.connect_options().clone(),
            opts,
            dev: Some(dev),
        }
    }

    /// The connection, when one is open (none after a link drop that
    /// reconnecting did not mend in time).
    pub fn into_device(self) -> Option<Device> {
        self.dev
    }

    /// Call handler `name` with `args`. When the link fails, the call is
    /// sent again with the same id over a new connection (with backoff) until
    /// [`RemoteIoOptions::call_timeout`]: the device runs it once.
    ///
    /// # Errors
    ///
    /// What [`Device::call`] returns, and [`Error::Timeout`] when no answer
    /// came in time.
    pub async fn call(&mut self, name: &str, args: Map<String, Value>) -> Result<CallReply> {
        let id = new_call_id();
        let deadline = Instant::now() + self.opts.call_timeout;
        let mut wait = self.opts.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let tried = tokio::time::timeout_at(deadline, async {
                if self.dev.is_none() {
                    let Some(link) = &self.link else {
                        return Err(Error::InvalidArgument(
                            "the connection dropped, and it was not opened from a link \
                             (tcp://…, serial://…) that can be reopened"
                                .into(),
                        ));
                    };
                    let opts = ConnectOptions {
                        connect_retry: Duration::ZERO,
                        ..self.connect.clone()
                    };
                    self.dev = Some(Device::open(link, opts).await?);
                }
                let dev = self.dev.as_mut().expect("connected");
                if let (Peer::MicroOta, Some(Link::Tcp { host, .. })) = (dev.peer(), &self.link) {
                    // micro-ota's RemoteIO: sent once (it cannot tell a resend).
                    let left = deadline.saturating_duration_since(Instant::now());
                    let port = self.opts.micro_ota_port;
                    let value = super::micro_ota::call(host, port, name, &args, left).await;
                    return value.map(|value| CallReply {
                        value,
                        boot: 0,
                        duplicate: false,
                        attempts: 1,
                    });
                }
                dev.call(&id, name, args.clone()).await
            })
            .await;
            match tried {
                Ok(Ok(mut reply)) => {
                    reply.attempts = attempts;
                    return Ok(reply);
                }
                Ok(Err(e)) if is_link_failure(&e) && Instant::now() + wait < deadline => {
                    tracing::debug!(error = %e, attempts, "call: link failed; sending it again");
                    self.dev = None;
                    tokio::time::sleep(wait).await;
                    wait = next_backoff(wait);
                }
                Ok(Err(e)) => {
                    if is_link_failure(&e) {
                        self.dev = None;
                    }
                    return Err(e);
                }
                Err(_) => {
                    self.dev = None;
                    return Err(Error::Timeout {
                        what: format!("the call {name} (sent {attempts} times)"),
                        after: self.opts.call_timeout,
                    });
                }
            }
        }
    }

    /// Close the connection.
    pub async fn close(mut self) {
        if let Some(dev) = self.dev.take() {
            let _ = dev.close().await;
        }
    }
}

/// Stream the device's output to `on_event` until `stop` completes: after
/// a link drop or an outage (no frame for
/// [`RemoteIoOptions::outage_after`]) it reconnects with backoff and
/// resumes from the first entry it has not seen, reporting gaps and restarts.
///
/// # Errors
///
/// Errors that reconnecting cannot mend (authentication, a runtime without
/// RemoteIO); link failures are retried.
pub async fn listen(
    link: &Link,
    connect: &ConnectOptions,
    opts: &RemoteIoOptions,
    on_event: &mut (dyn FnMut(&OutputEvent) + Send),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let mut stream = OutputStream::new(opts.outage_after);
    tokio::pin!(stop);
    let mut wait = opts.backoff;
    // The numbering of a micro-ota device's lines, across reconnections.
    let mut micro_ota_next = 0;
    loop {
        let session = listen_once(
            link,
            connect,
            &mut stream,
            &mut micro_ota_next,
            on_event,
            &mut wait,
            opts,
        );
        let res = tokio::select! {
            r = session => r,
            () = &mut stop => return Ok(()),
        };
        let e = match res {
            Ok(()) => continue,
            Err(e) if is_link_failure(&e) || matches!(e.kind(), ErrorKind::Protocol) => e,
            Err(e) => return Err(e),
        };
        on_event(&OutputEvent::LinkDown {
            reason: e.to_string(),
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return Ok(()),
        }
        wait = next_backoff(wait);
    }
}

async fn listen_once(
    link: &Link,
    connect: &ConnectOptions,
    stream: &mut OutputStream,
    micro_ota_next: &mut u64,
    on_event: &mut (dyn FnMut(&OutputEvent) + Send),
    wait: &mut Duration,
    opts: &RemoteIoOptions,
) -> Result<()> {
    let copts = ConnectOptions {
        connect_retry: Duration::ZERO,
        ..connect.clone()
    };
    let mut dev = Device::open(link, copts).await?;
    if let (Peer::MicroOta, Link::Tcp { host, .. }) = (dev.peer(), link) {
        // micro-ota's RemoteIO: its print lines on its own port, numbered
        // here (it keeps nothing while nobody listens, and has no keepalive).
        let _ = dev.close().await;
        *wait = opts.backoff;
        return super::micro_ota::listen_session(
            host,
            opts.micro_ota_port,
            connect.timeout,
            micro_ota_next,
            on_event,
        )
        .await;
    }
    let boot = dev
        .listen(stream.resume_from(), stream.boot(), stream.keepalive())
        .await?;
    *wait = opts.backoff;
    for ev in stream.on_listen_reply(boot, std::time::Instant::now()) {
        on_event(&ev);
    }
    loop {
        let now = std::time::Instant::now();
        let left = stream.deadline(now).saturating_duration_since(now);
        match dev.next_output(left).await {
            Ok(payload) => {
                for ev in stream.on_data(&payload, std::time::Instant::now())? {
                    on_event(&ev);
                }
            }
            Err(Error::Timeout { .. }) => {
                dev.cancel();
                return Err(Error::Timeout {
                    what: "the device's output (no frame, not even a keepalive)".into(),
                    after: opts.outage_after,
                });
            }
            Err(e) => return Err(e),
        }
    }
}
