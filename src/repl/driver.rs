//! [`Repl`]: the async driver of the raw REPL machine over a transport.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::machine::{
    Completion, Escaped, Event, ExecOutput, ReplConfig, ReplMachine, ReplMode, Request, Stream,
    Timeouts,
};
use crate::error::{Error, Result};
use crate::transport::Transport;

/// The REPL of one device, over a transport (a serial port, a pty, …).
///
/// Every method runs one step of the exchange with its own timeout (see
/// [`Timeouts`]); a timeout is an [`Error::Timeout`] naming the step, and a
/// program's uncaught exception is an [`Error::DeviceException`] carrying the
/// traceback. After an error the REPL's state is unknown, and the next exec
/// interrupts and re-enters the raw REPL first.
///
/// The link stays usable for other protocols: [`write_raw`](Self::write_raw),
/// [`read_raw`](Self::read_raw), [`transport_mut`](Self::transport_mut) and
/// [`into_parts`](Self::into_parts).
#[derive(Debug)]
pub struct Repl<T: Transport> {
    io: T,
    machine: ReplMachine,
    peer: String,
    buf: Vec<u8>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<T: Transport> Repl<T> {
    /// A REPL over `io` with the default configuration (raw-paste on).
    pub fn new(io: T) -> Self {
        Self::with_config(io, ReplConfig::default())
    }

    /// A REPL over `io` with `config`.
    pub fn with_config(io: T, config: ReplConfig) -> Self {
        let peer = io.peer();
        Self {
            io,
            machine: ReplMachine::new(config),
            peer,
            buf: vec![0; 4096],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReplConfig {
        self.machine.config()
    }

    /// Change the configuration.
    pub fn config_mut(&mut self) -> &mut ReplConfig {
        self.machine.config_mut()
    }

    /// Change the timeouts.
    pub fn timeouts_mut(&mut self) -> &mut Timeouts {
        &mut self.machine.config_mut().timeouts
    }

    /// Use raw-paste mode when the device has it (`true`, the default), or
    /// always the plain raw REPL (`false`).
    pub fn set_raw_paste(&mut self, on: bool) {
        self.machine.config_mut().raw_paste = on;
    }

    /// The device's answer to raw-paste: `Some(true)` supported, `Some(false)`
    /// refused, `None` not asked yet.
    pub fn raw_paste_supported(&self) -> Option<bool> {
        self.machine.raw_paste_supported()
    }

    /// What the driver knows about the device's REPL.
    pub fn mode(&self) -> ReplMode {
        self.machine.mode()
    }

    /// The peer's name (the port).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The protocol machine (e.g. to tell it the mode after using the raw link).
    pub fn machine_mut(&mut self) -> &mut ReplMachine {
        &mut self.machine
    }

    /// Ctrl-C twice, with a short pause: stops a running program. The REPL
    /// (friendly or raw) is then at its prompt; output around the interrupt is dropped.
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer))]
    pub async fn interrupt(&mut self) -> Result<()> {
        self.run(Request::Interrupt, &mut |_, _| {}).await.map(drop)
    }

    /// Enter the raw REPL (Ctrl-A) and wait for its prompt. A running program
    /// must be interrupted first ([`interrupt`](Self::interrupt)).
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer))]
    pub async fn enter_raw(&mut self) -> Result<()> {
        self.run(Request::EnterRaw, &mut |_, _| {}).await.map(drop)
    }

    /// Get to the raw REPL prompt from wherever the device is: nothing to do
    /// at the raw prompt, Ctrl-A from the friendly REPL, else interrupt first.
    ///
    /// A program started with [`start`](Self::start) must be
    /// [followed](Self::follow) or [interrupted](Self::interrupt) first.
    pub async fn ensure_raw(&mut self) -> Result<()> {
        match self.machine.mode() {
            ReplMode::Raw => Ok(()),
            ReplMode::Friendly => self.enter_raw().await,
            ReplMode::Unknown => {
                self.interrupt().await?;
                self.enter_raw().await
            }
            ReplMode::Running => Err(Error::InvalidArgument(
                "a program started on the device is still running: follow() or interrupt() it first"
                    .into(),
            )),
        }
    }

    /// [`ensure_raw`](Self::ensure_raw) on a board that may still be
    /// booting (after a reset): interrupts miss it until its `boot.py` runs,
    /// so probe with a short wait for the raw banner, again and again, for up
    /// to `within`. Each probe waits twice as long as the one before (up to
    /// the configured `enter_raw`), so a slow or busy host still gets there.
    pub async fn ensure_raw_within(&mut self, within: std::time::Duration) -> Result<()> {
        let enter_raw = self.machine.config().timeouts.enter_raw;
        let mut probe = enter_raw.min(std::time::Duration::from_millis(700));
        self.timeouts_mut().enter_raw = probe;
        let started = tokio::time::Instant::now();
        let reached = loop {
            match self.ensure_raw().await {
                Ok(()) => break Ok(()),
                Err(e) if e.kind() == crate::ErrorKind::Timeout && started.elapsed() < within => {
                    tracing::debug!(error = %e, "the board did not reach the raw REPL yet; again");
                    probe = (probe * 2).min(enter_raw.max(probe));
                    self.timeouts_mut().enter_raw = probe;
                    self.interrupt().await.ok();
                }
                Err(e) => break Err(e),
            }
        };
        self.timeouts_mut().enter_raw = enter_raw;
        reached
    }

    /// Run `code` and wait for it to end; its stdout is returned, an uncaught
    /// exception is an [`Error::DeviceException`].
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer, len = code.as_ref().len()))]
    pub async fn exec(&mut self, code: impl AsRef<[u8]>) -> Result<ExecOutput> {
        self.exec_with(code, |_, _| {}).await?.into_result()
    }

    /// Run `code` and return stdout and stderr as they are (an exception's
    /// traceback in stderr is not an error here).
    pub async fn exec_capture(&mut self, code: impl AsRef<[u8]>) -> Result<ExecOutput> {
        self.exec_with(code, |_, _| {}).await
    }

    /// Like [`exec_capture`](Self::exec_capture), handing each piece of output
    /// to `on_output` as it arrives.
    pub async fn exec_with(
        &mut self,
        code: impl AsRef<[u8]>,
        mut on_output: impl FnMut(Stream, &[u8]) + Send,
    ) -> Result<ExecOutput> {
        self.ensure_raw().await?;
        let request = Request::Exec {
            code: code.as_ref().to_vec(),
            follow: true,
        };
        match self.run(request, &mut on_output).await? {
            Completion::Exec(out) => Ok(out),
            other => Err(unexpected(other)),
        }
    }

    /// Evaluate a Python expression on the device and return its `repr()`.
    pub async fn eval(&mut self, expr: &str) -> Result<String> {
        let out = self.exec(format!("print(repr({expr}))")).await?;
        let text = out.stdout_text();
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Send `code` and return as soon as the device runs it, without waiting
    /// for it to end; returns whether raw-paste mode carried it. Then talk to
    /// the program with [`write_raw`](Self::write_raw)/[`read_raw`](Self::read_raw),
    /// collect its output with [`follow`](Self::follow), or stop it with
    /// [`interrupt`](Self::interrupt).
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer, len = code.as_ref().len()))]
    pub async fn start(&mut self, code: impl AsRef<[u8]>) -> Result<bool> {
        self.ensure_raw().await?;
        let request = Request::Exec {
            code: code.as_ref().to_vec(),
            follow: false,
        };
        match self.run(request, &mut |_, _| {}).await? {
            Completion::Started { raw_paste } => Ok(raw_paste),
            other => Err(unexpected(other)),
        }
    }

    /// Wait for a program started with [`start`](Self::start) to end, with
    /// the exec timeout; an uncaught exception is an [`Error::DeviceException`].
    pub async fn follow(&mut self) -> Result<ExecOutput> {
        match self.run(Request::Follow, &mut |_, _| {}).await? {
            Completion::Exec(out) => out.into_result(),
            other => Err(unexpected(other)),
        }
    }

    /// Soft-reset the device (Ctrl-D at the raw prompt) and wait until it is
    /// back at the raw REPL prompt.
    ///
    /// A board comes back to the raw REPL by itself (after `MPY: soft reboot`
    /// and its `boot.py`); a device that comes back to the friendly REPL (the
    /// unix port, restarted) is taken to the raw REPL again.
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer))]
    pub async fn soft_reset(&mut self) -> Result<()> {
        self.ensure_raw().await?;
        self.run(Request::SoftReset, &mut |_, _| {}).await.map(drop)
    }

    /// Back to the friendly REPL (Ctrl-B), as a person at a terminal expects to find it.
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.peer))]
    pub async fn leave_raw(&mut self) -> Result<()> {
        self.run(Request::LeaveRaw, &mut |_, _| {}).await.map(drop)
    }

    /// Write bytes straight to the link (e.g. to a program started with
    /// [`start`](Self::start)), with the handshake timeout.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.write(bytes).await
    }

    /// Read bytes straight from the link: first what the REPL received but
    /// did not use, then the transport. `Ok(0)` means the link closed.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
        let pending = self.machine.take_received();
        if !pending.is_empty() {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            if n < pending.len() {
                // Put the rest back for the next read.
                self.machine.handle_input(&pending[n..], now());
            }
            return Ok(n);
        }
        self.io.read(buf).await.map_err(|source| Error::Transport {
            target: self.peer.clone(),
            source,
        })
    }

    /// Bytes the REPL received but did not use (empties its buffer).
    pub fn take_received(&mut self) -> Vec<u8> {
        self.machine.take_received()
    }

    /// The transport (bytes read through it bypass the REPL's buffer, see
    /// [`take_received`](Self::take_received)).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// The transport and the bytes received but not used.
    pub fn into_parts(mut self) -> (T, Vec<u8>) {
        let rest = self.machine.take_received();
        (self.io, rest)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        tracing::trace!(bytes = ?Escaped(bytes), "repl: write");
        let after = self.machine.config().timeouts.handshake;
        let io = &mut self.io;
        let written = tokio::time::timeout(after, async move {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Transport {
                target: self.peer.clone(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                what: "REPL: writing to the device".into(),
                after,
            }),
        }
    }

    /// Run one request to its end.
    async fn run(
        &mut self,
        request: Request,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Completion> {
        if self.machine.is_busy() {
            // A previous call was cancelled (its future dropped) half-way.
            tracing::debug!("repl: abandoning a cancelled request");
            self.machine.cancel();
        }
        self.machine.start(request, now())?;
        let result = self.drive(on_output).await;
        if result.is_err() && self.machine.is_busy() {
            self.machine.cancel();
        }
        result
    }

    async fn drive(
        &mut self,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Completion> {
        loop {
            while let Some(bytes) = self.machine.poll_transmit() {
                self.write(&bytes).await?;
            }
            while let Some(event) = self.machine.poll_event() {
                match event {
                    Event::Output(stream, bytes) => on_output(stream, &bytes),
                    Event::Done(done) => return Ok(done),
                    Event::Failed(e) => return Err(e),
                }
            }
            let deadline = self
                .machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                read = self.io.read(&mut self.buf) => match read {
                    Ok(0) => self.machine.handle_eof(),
                    Ok(n) => {
                        tracing::trace!(bytes = ?Escaped(&self.buf[..n]), "repl: read");
                        self.machine.handle_input(&self.buf[..n], now());
                    }
                    Err(source) => {
                        return Err(Error::Transport { target: self.peer.clone(), source });
                    }
                },
                _ = sleep_until(deadline) => self.machine.handle_timeout(now()),
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unexpected(c: Completion) -> Error {
    Error::Protocol(format!("REPL request ended unexpectedly: {c:?}"))
}
