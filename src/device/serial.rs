//! OTA over a board's serial console.
//!
//! The installed runtime serves the same protocol as over WiFi on the REPL's
//! console: the host stops the running program, enters the raw REPL, starts
//! `uota.transports.serial_stdio.serve()` and then talks frames to it. `bye`
//! ends the session and hands the console back to the REPL
//! (docs/protocol.md, "Serial sessions").
//!
//! The device paces the host with credit (one grant byte per
//! [`CreditWindow::credit`] bytes it took in), so that a UART's receive buffer
//! never overflows: the host asks for it when it arms the session, and a
//! runtime that predates it arms a session without (docs/protocol.md, "Flow
//! control").

use super::{ConnectOptions, Device, ProtocolChoice};
use crate::error::{Error, Result};
use crate::protocol::credit::CreditWindow;
use crate::protocol::Request;
use crate::repl::Repl;
use crate::transport::credit::CreditTransport;
use crate::transport::link::Capabilities;
use crate::transport::prefixed::PrefixedTransport;
use crate::transport::{BoxTransport, Transport};

/// What the host runs in the raw REPL to arm a serial session: the next
/// boot serves the OTA protocol on the console instead of starting the app,
/// granting credit `C` at a time. A runtime without flow control has an
/// `arm()` without arguments, and arms a session without credit.
fn arm_code(credit: usize) -> String {
    format!(
        "C = {credit}\n\
         try:\n import uota.transports.serial_stdio as _uota_s\nexcept ImportError:\n _uota_s = None\n\
         if _uota_s is None:\n print('uota-serial:missing')\n\
         else:\n try:\n  print(_uota_s.arm(C))\n except TypeError:\n  print(_uota_s.arm())\n"
    )
}

/// What an armed board answers: `uota-serial:armed`, then ` credit=N` when
/// the session will grant credit N at a time.
fn parse_armed(answer: &str) -> Option<Option<usize>> {
    let rest = answer.strip_prefix("uota-serial:armed")?;
    if rest.is_empty() {
        return Some(None);
    }
    let n = rest.strip_prefix(" credit=")?.parse().ok()?;
    Some(Some(n))
}

/// The line the armed boot prints before it serves.
const READY_LINE: &str = "uota-serial:ready";

impl Device {
    /// Open an OTA session over a REPL console (a serial port).
    ///
    /// Whatever runs on the board is interrupted; the session then runs the
    /// installed runtime's console server. End it with [`Device::bye`] (or a
    /// reset or commit, which restart the board).
    ///
    /// # Errors
    ///
    /// [`Error::Device`] with code `no_runtime` when the board has no uota
    /// runtime (install it with `uota bootstrap`), REPL and handshake errors.
    pub async fn connect_repl<T: Transport>(repl: Repl<T>, opts: ConnectOptions) -> Result<Device> {
        let capabilities = crate::transport::link::serial_capabilities(repl.peer());
        Device::connect_console(repl, opts, capabilities).await
    }

    /// [`Device::connect_repl`] on a link with these capabilities (they
    /// choose the credit window unless `opts` says).
    pub(crate) async fn connect_console<T: Transport>(
        mut repl: Repl<T>,
        opts: ConnectOptions,
        capabilities: Capabilities,
    ) -> Result<Device> {
        let window = match opts.console_credit {
            Some(w) => Some(w),
            None if capabilities.flow_control => None,
            None => Some(CreditWindow::UART),
        };
        if let Some(w) = window {
            w.check()
                .map_err(|e| Error::InvalidArgument(format!("console_credit: {e}")))?;
        }
        let arm = arm_code(window.map_or(0, |w| w.credit));
        let boot = opts.timeout.max(std::time::Duration::from_secs(10));
        // A board that was still booting may take the raw REPL and then
        // miss the exec (its boot was interrupted under it): reach it again.
        let mut attempts = 0;
        let armed = loop {
            repl.ensure_raw_within(boot).await?;
            match repl.exec(&arm).await {
                Ok(out) => break out,
                Err(e) if attempts < 2 && e.kind() == crate::ErrorKind::Timeout => {
                    tracing::debug!(error = %e, "arming the serial session; again");
                    attempts += 1;
                    repl.interrupt().await.ok();
                }
                Err(e) => return Err(e),
            }
        };
        let answer = armed.stdout_text();
        let granted = match answer.trim() {
            "uota-serial:missing" => {
                return Err(Error::Device {
                    op: "serial".into(),
                    code: "no_runtime".into(),
                    message: "the board has no uota runtime; install it with `uota bootstrap`"
                        .into(),
                })
            }
            other => match parse_armed(other) {
                Some(granted) => granted,
                None => {
                    return Err(Error::Protocol(format!(
                        "the board did not arm a serial session (it printed {other:?})"
                    )))
                }
            },
        };
        // Soft reset: the board boots into the serial session (no app, no
        // threads), prints READY_LINE and serves.
        repl.write_raw(b"\x04").await?;
        let boot_wait = opts.timeout.max(std::time::Duration::from_secs(10));
        wait_for_line(&mut repl, READY_LINE, boot_wait).await?;
        let (io, rest) = repl.into_parts();
        let io = PrefixedTransport::new(rest, io);
        let mut flow = None;
        let io: BoxTransport = match (granted, window) {
            (Some(credit), Some(asked)) => {
                // The device grants what it said; the window holds two grants at least.
                let window = CreditWindow {
                    credit,
                    window: asked.window.max(2 * credit),
                };
                tracing::debug!(?window, "serial session: credit flow control");
                flow = Some(window);
                Box::new(CreditTransport::new(io, window))
            }
            (Some(_), None) => {
                return Err(Error::Protocol(
                    "the board armed a serial session with credit the host did not ask for".into(),
                ))
            }
            (None, _) => {
                if window.is_some() {
                    tracing::warn!(
                        "the board's uota runtime predates flow control on the console: on a \
                         UART bytes may be lost while it writes flash (a push then fails its \
                         checks; nothing is committed). Update it with `uota bootstrap`"
                    );
                }
                Box::new(io)
            }
        };
        let opts = ConnectOptions {
            protocol: ProtocolChoice::Uota,
            ..opts
        };
        let mut dev = Device::handshake(io, opts).await?;
        dev.console = true;
        dev.console_credit = flow;
        dev.capabilities = capabilities;
        Ok(dev)
    }

    /// Whether this session runs on a REPL console (a serial port).
    pub fn is_console(&self) -> bool {
        self.console
    }

    /// The flow control of this console session: the device's credit and
    /// the host's window, or `None` when the device grants no credit (a
    /// link with flow control of its own, a runtime that predates it, TCP).
    pub fn console_credit(&self) -> Option<CreditWindow> {
        self.console_credit
    }

    /// End a session: `bye`, after which a serial board resets into a normal
    /// boot. Returns the transport (e.g. for a [`Repl`]). Over TCP this
    /// simply ends the connection.
    pub async fn bye(mut self) -> Result<BoxTransport> {
        if !self.closed {
            self.request(&Request::Bye).await?;
            self.closed = true;
        }
        // The console goes back to the REPL: no more credit.
        self.io.passthrough();
        Ok(std::mem::replace(&mut self.io, Box::new(super::Aborted)))
    }

    /// End the session and leave the board running: over a console, `bye`
    /// (the board then resets into a normal boot, unless a commit or
    /// `reset` already restarted it). Over TCP the connection is closed.
    pub async fn close(self) -> Result<()> {
        if !self.console || self.closed {
            return Ok(());
        }
        self.bye().await.map(drop)
    }
}

/// Read lines until one equals `want` (the boot prints its log first).
async fn wait_for_line<T: Transport>(
    repl: &mut Repl<T>,
    want: &str,
    within: std::time::Duration,
) -> Result<()> {
    let mut line = Vec::new();
    let mut seen = String::new();
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            let n = repl.read_raw(&mut byte).await?;
            if n == 0 {
                return Err(Error::ConnectionClosed {
                    during: "starting the serial session".into(),
                });
            }
            match byte[0] {
                b'\n' => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if text == want {
                        return Ok(());
                    }
                    tracing::debug!(line = %text, "serial session: boot output");
                    if seen.len() < 2000 {
                        seen.push_str(&text);
                        seen.push('\n');
                    }
                    line.clear();
                }
                b'\r' => {}
                b => line.push(b),
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            what: format!("the board booting into the serial session (it printed: {seen:?})"),
            after: within,
        }),
    }
}
