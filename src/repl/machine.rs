//! The raw REPL as a sans-IO state machine: bytes in, events out, time passed in.
//!
//! [`ReplMachine`] never touches a port and never reads the clock. Its owner
//! (the async [`Repl`](super::Repl) driver, or a test) drives it like this:
//!
//! 1. [`start`](ReplMachine::start) a [`Request`] (one at a time);
//! 2. write every chunk [`poll_transmit`](ReplMachine::poll_transmit) hands out, in order;
//! 3. take the [`Event`]s from [`poll_event`](ReplMachine::poll_event) until a
//!    [`Event::Done`] or [`Event::Failed`] ends the request;
//! 4. otherwise wait for bytes from the device, feeding them to
//!    [`handle_input`](ReplMachine::handle_input), or for the instant
//!    [`poll_timeout`](ReplMachine::poll_timeout) names, then call
//!    [`handle_timeout`](ReplMachine::handle_timeout); a closed link is
//!    [`handle_eof`](ReplMachine::handle_eof). Go back to 2.
//!
//! The exchange itself is described byte by byte in `docs/repl.md`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a raw banner that arrives where the raw-paste reply was expected
/// waits for that reply to follow it (then the banner is the firmware's
/// answer: it has no raw-paste). Only firmware without raw-paste pays it.
const LATE_BANNER_GRACE: Duration = Duration::from_secs(2);

/// Ctrl-A: enter the raw REPL (on an empty line).
pub const CTRL_A: u8 = 0x01;
/// Ctrl-B: leave the raw REPL for the friendly one.
pub const CTRL_B: u8 = 0x02;
/// Ctrl-C: interrupt the running program (KeyboardInterrupt).
pub const CTRL_C: u8 = 0x03;
/// Ctrl-D: end of input; on an empty raw REPL line, a soft reset.
pub const CTRL_D: u8 = 0x04;
/// Ctrl-E: starts the raw-paste request `\x05A\x01`.
pub const CTRL_E: u8 = 0x05;

/// What the device prints on entering the raw REPL (then `\r\n>`).
pub const RAW_BANNER: &[u8] = b"raw REPL; CTRL-B to exit";
/// The friendly REPL's prompt.
pub const FRIENDLY_PROMPT: &[u8] = b">>> ";
/// Part of the line a board prints when it soft-resets (`MPY: soft reboot`).
pub const SOFT_REBOOT: &[u8] = b"soft reboot";
/// How the friendly REPL's banner starts (printed when a device boots into it).
pub const BOOT_BANNER: &[u8] = b"MicroPython ";
/// The raw-paste request, sent at the raw REPL prompt.
pub const RAW_PASTE_REQUEST: &[u8] = b"\x05A\x01";

/// How long each step of the exchange may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Pause after each of the two Ctrl-C of an interrupt.
    pub interrupt_pause: Duration,
    /// Entering the raw REPL: from Ctrl-A to its banner and prompt.
    pub enter_raw: Duration,
    /// Each handshake of an exec: the raw-paste reply and window, every
    /// flow-control grant, the compile acknowledgement, `OK`, the prompt.
    pub handshake: Duration,
    /// A program's run: from the end of its code to the end of its output.
    pub exec: Duration,
    /// A soft reset: from Ctrl-D to the raw REPL prompt again (boot.py included).
    pub soft_reset: Duration,
    /// Leaving the raw REPL: from Ctrl-B to the friendly prompt.
    pub leave_raw: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            interrupt_pause: Duration::from_millis(50),
            enter_raw: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            exec: Duration::from_secs(30),
            soft_reset: Duration::from_secs(10),
            leave_raw: Duration::from_secs(5),
        }
    }
}

/// How a [`ReplMachine`] talks to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplConfig {
    /// Timeouts of every step.
    pub timeouts: Timeouts,
    /// Ask for raw-paste mode (flow-controlled) before each exec. When the
    /// device refuses, the machine uses the plain raw REPL from then on.
    pub raw_paste: bool,
    /// Plain raw REPL (no flow control): bytes written at a time.
    pub plain_chunk: usize,
    /// Plain raw REPL: pause between two chunks, so that a board's small
    /// input buffer never overflows.
    pub plain_chunk_pause: Duration,
}

impl Default for ReplConfig {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            raw_paste: true,
            plain_chunk: 256,
            plain_chunk_pause: Duration::from_millis(10),
        }
    }
}

/// What the machine knows about the device's REPL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplMode {
    /// Not known (a new link, or after a timeout or an interrupt).
    Unknown,
    /// The friendly REPL (`>>> `).
    Friendly,
    /// The raw REPL, at its `>` prompt with an empty line.
    Raw,
    /// A program started with [`Request::Exec`] `follow: false` is running;
    /// [`Request::Follow`] collects its output.
    Running,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Ctrl-C, a pause, Ctrl-C again, a pause: stops a running program.
    Interrupt,
    /// Ctrl-A and wait for the raw REPL's banner and prompt.
    EnterRaw,
    /// Run code in the raw REPL (needs [`ReplMode::Raw`]).
    Exec {
        /// Python source (no Ctrl-C/Ctrl-D bytes; none of Ctrl-A…Ctrl-D without raw-paste).
        code: Vec<u8>,
        /// Wait for the program's output; `false` ends the request once the
        /// device has the code and runs it ([`Completion::Started`]).
        follow: bool,
    },
    /// Collect the output of a program started without `follow`.
    Follow,
    /// Ctrl-D at the raw prompt: the board soft-resets and comes back to the
    /// raw REPL (the machine re-enters it if the device comes back friendly).
    SoftReset,
    /// Ctrl-B: back to the friendly REPL.
    LeaveRaw,
}

/// What a finished exec printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything the program wrote to stdout (the device's newlines as they are).
    pub stdout: Vec<u8>,
    /// The traceback of an uncaught exception, empty when there was none.
    pub stderr: Vec<u8>,
    /// The code went over raw-paste mode (flow-controlled).
    pub raw_paste: bool,
}

impl ExecOutput {
    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The uncaught exception as an [`Error::DeviceException`], if there was one.
    pub fn exception(&self) -> Option<Error> {
        if self.stderr.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(parse_exception(&self.stderr_text()))
    }

    /// `Ok(self)` when the program ended normally, else its [`Error::DeviceException`].
    pub fn into_result(self) -> crate::Result<ExecOutput> {
        match self.exception() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// Turn a MicroPython traceback into an [`Error::DeviceException`].
///
/// The exception is named on the last non-empty line: `Type: message` or just `Type`.
pub fn parse_exception(traceback: &str) -> Error {
    let last = traceback
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let (exception, message) = match last.split_once(':') {
        Some((t, m)) if !t.is_empty() && !t.contains(' ') => (t, m.trim()),
        _ => (last, ""),
    };
    Error::DeviceException {
        exception: exception.to_string(),
        message: message.to_string(),
        traceback: traceback.to_string(),
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The interrupt was sent.
    Interrupted,
    /// The device is at the raw REPL prompt.
    EnteredRaw,
    /// The device has the code and runs it (exec without follow).
    Started {
        /// The code went over raw-paste mode.
        raw_paste: bool,
    },
    /// The program ended (normally or with an exception, see [`ExecOutput::stderr`]).
    Exec(ExecOutput),
    /// The device soft-reset and is at the raw REPL prompt again.
    SoftReset,
    /// The device is at the friendly REPL prompt.
    LeftRaw,
}

/// Which output stream an [`Event::Output`] chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The program's stdout.
    Stdout,
    /// The traceback part (stderr).
    Stderr,
}

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    /// Output of the running program, as it arrives.
    Output(Stream, Vec<u8>),
    /// The current request finished.
    Done(Completion),
    /// The current request failed; the device's state is now [`ReplMode::Unknown`]
    /// unless the error says otherwise.
    Failed(Error),
}

/// Where an exec is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecStep {
    /// Sent `\x05A\x01`; waiting for `R\x01`, `R\x00` or an old firmware's banner.
    PasteReply,
    /// Old firmware: the Ctrl-A re-printed the banner; wait for its `>`.
    PasteFallbackPrompt,
    /// Got `R\x01`; waiting for the 2-byte window size.
    PasteWindow,
    /// Sending code within the window; reading grants (`\x01`) and aborts (`\x04`).
    PasteSend,
    /// Sent the final `\x04`; waiting for the device's `\x04` (compiled).
    PasteAck,
    /// Plain raw REPL: sending chunks with pauses.
    PlainSend,
    /// Plain raw REPL: sent `\x04`; waiting for `OK`.
    PlainOk,
    /// Reading stdout up to `\x04`.
    Stdout,
    /// Reading stderr up to `\x04`.
    Stderr,
    /// Waiting for the raw prompt `>`.
    Prompt,
}

#[derive(Debug)]
struct ExecJob {
    code: Vec<u8>,
    sent: usize,
    follow: bool,
    step: ExecStep,
    window: usize,
    credit: usize,
    /// Plain mode: when the next chunk may go. Waiting for the raw-paste
    /// reply after a raw banner: when the banner counts as the answer.
    next_chunk: Option<Instant>,
    out: ExecOutput,
}

#[derive(Debug)]
enum State {
    Idle,
    Interrupt {
        /// 1: the first Ctrl-C went, 2: the second went.
        sent: u8,
        at: Instant,
    },
    /// Waiting for the raw banner and its prompt.
    RawBanner {
        completion: Completion,
    },
    /// After a soft reset: the raw banner (a board), or the friendly prompt
    /// (the unix port restarted), whichever comes first.
    Rebooting {
        completion: Completion,
    },
    /// Waiting for the friendly prompt.
    FriendlyPrompt,
    Exec(Box<ExecJob>),
}

/// The raw REPL protocol of MicroPython, sans-IO. See the [module docs](self)
/// for how to drive it.
#[derive(Debug)]
pub struct ReplMachine {
    config: ReplConfig,
    state: State,
    mode: ReplMode,
    /// The device's answer to the raw-paste request: `None` until asked.
    paste_supported: Option<bool>,
    /// The running program (exec without follow) went over raw-paste.
    running_paste: bool,
    rx: Vec<u8>,
    tx: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    /// The current step's deadline and what it is waiting for.
    deadline: Option<(Instant, &'static str, Duration)>,
}

impl Default for ReplMachine {
    fn default() -> Self {
        Self::new(ReplConfig::default())
    }
}

impl ReplMachine {
    /// A machine that knows nothing about the device yet.
    pub fn new(config: ReplConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            mode: ReplMode::Unknown,
            paste_supported: None,
            running_paste: false,
            rx: Vec::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            deadline: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReplConfig {
        &self.config
    }

    /// Change the configuration (takes effect at the next request or step).
    pub fn config_mut(&mut self) -> &mut ReplConfig {
        &mut self.config
    }

    /// What the machine knows about the device's REPL.
    pub fn mode(&self) -> ReplMode {
        self.mode
    }

    /// Forget what the device's REPL is doing (e.g. after the caller used the link itself).
    pub fn set_mode(&mut self, mode: ReplMode) {
        self.mode = mode;
    }

    /// The device's answer to raw-paste: `Some(true)` supported, `Some(false)`
    /// refused, `None` not asked yet.
    pub fn raw_paste_supported(&self) -> Option<bool> {
        self.paste_supported
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Bytes received that no request consumed (e.g. a running program's
    /// output read through the raw link). Empties the buffer.
    pub fn take_received(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rx)
    }

    /// Begin a request.
    ///
    /// Fails at once, changing nothing, when another request is in progress,
    /// when the device is not in the mode the request needs ([`Request::Exec`]
    /// and [`Request::SoftReset`] need [`ReplMode::Raw`], [`Request::Follow`]
    /// needs [`ReplMode::Running`]) or when the code holds bytes the REPL would
    /// take as commands.
    pub fn start(&mut self, request: Request, now: Instant) -> crate::Result<()> {
        if self.is_busy() {
            return Err(Error::InvalidArgument(
                "a REPL request is already in progress".into(),
            ));
        }
        let t = self.config.timeouts.clone();
        match request {
            Request::Interrupt => {
                tracing::debug!("repl: interrupt");
                // The carriage return ends any half-typed friendly line first.
                self.tx.push_back(vec![b'\r', CTRL_C]);
                self.state = State::Interrupt { sent: 1, at: now };
                self.deadline = None;
            }
            Request::EnterRaw => {
                tracing::debug!("repl: enter raw REPL");
                self.rx.clear();
                self.tx.push_back(vec![b'\r', CTRL_A]);
                self.state = State::RawBanner {
                    completion: Completion::EnteredRaw,
                };
                self.set_deadline(now, "entering the raw REPL (banner)", t.enter_raw);
            }
            Request::SoftReset => {
                self.need_mode(ReplMode::Raw, "a soft reset")?;
                tracing::debug!("repl: soft reset");
                self.rx.clear();
                self.tx.push_back(vec![CTRL_D]);
                self.state = State::Rebooting {
                    completion: Completion::SoftReset,
                };
                self.set_deadline(now, "soft reset (back to the REPL)", t.soft_reset);
            }
            Request::LeaveRaw => {
                tracing::debug!("repl: leave raw REPL");
                self.rx.clear();
                self.tx.push_back(vec![b'\r', CTRL_B]);
                self.state = State::FriendlyPrompt;
                self.set_deadline(now, "leaving the raw REPL (friendly prompt)", t.leave_raw);
            }
            Request::Follow => {
                self.need_mode(ReplMode::Running, "following a program")?;
                let job = ExecJob {
                    code: Vec::new(),
                    sent: 0,
                    follow: true,
                    step: ExecStep::Stdout,
                    window: 0,
                    credit: 0,
                    next_chunk: None,
                    out: ExecOutput {
                        raw_paste: self.running_paste,
                        ..ExecOutput::default()
                    },
                };
                self.state = State::Exec(Box::new(job));
                self.set_deadline(now, "the program's output", t.exec);
                // Output may already be waiting.
                self.process(now);
            }
            Request::Exec { code, follow } => {
                self.need_mode(ReplMode::Raw, "exec")?;
                let paste = self.config.raw_paste && self.paste_supported != Some(false);
                check_code(&code, paste)?;
                // Anything left over belongs to nothing (a late banner, noise).
                if !self.rx.is_empty() {
                    tracing::debug!(stale = ?Escaped(&self.rx), "repl: dropping stale input");
                    self.rx.clear();
                }
                let mut job = ExecJob {
                    code,
                    sent: 0,
                    follow,
                    step: ExecStep::PasteReply,
                    window: 0,
                    credit: 0,
                    next_chunk: None,
                    out: ExecOutput::default(),
                };
                if paste {
                    self.tx.push_back(RAW_PASTE_REQUEST.to_vec());
                    self.set_deadline(now, "the raw-paste reply", t.handshake);
                } else {
                    job.step = ExecStep::PlainSend;
                    job.next_chunk = Some(now);
                }
                self.state = State::Exec(Box::new(job));
                self.mode = ReplMode::Unknown;
                self.process(now);
            }
        }
        Ok(())
    }

    /// Abandon the request in progress (its caller went away); the device's
    /// state becomes [`ReplMode::Unknown`].
    pub fn cancel(&mut self) {
        self.state = State::Idle;
        self.deadline = None;
        self.mode = ReplMode::Unknown;
        self.tx.clear();
        self.events.clear();
    }

    /// Feed bytes read from the device.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.rx.extend_from_slice(bytes);
        self.process(now);
    }

    /// The link closed: a request in progress fails.
    pub fn handle_eof(&mut self) {
        if self.is_busy() {
            let during = self.deadline.map(|d| d.1).unwrap_or("a REPL request");
            self.fail(Error::ConnectionClosed {
                during: during.to_string(),
            });
        }
    }

    /// Time passed: timers fire and overdue steps fail with [`Error::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, what, after)) = self.deadline {
            if now >= at {
                tracing::debug!(what, ?after, received = ?Escaped(&self.rx), "repl: timeout");
                self.fail(Error::Timeout {
                    what: format!("REPL: {what}"),
                    after,
                });
                return;
            }
        }
        self.process(now);
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = match &self.state {
            State::Interrupt { at, .. } => Some(*at + self.config.timeouts.interrupt_pause),
            State::Exec(job) if matches!(job.step, ExecStep::PlainSend | ExecStep::PasteReply) => {
                job.next_chunk
            }
            _ => None,
        };
        match (timer, self.deadline.map(|d| d.0)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next bytes to write to the device.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn need_mode(&self, mode: ReplMode, what: &str) -> crate::Result<()> {
        if self.mode == mode {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} needs the device in {mode:?} REPL mode, but it is {:?}",
                self.mode
            )))
        }
    }

    fn set_deadline(&mut self, now: Instant, what: &'static str, after: Duration) {
        self.deadline = Some((now + after, what, after));
    }

    fn finish(&mut self, completion: Completion) {
        tracing::debug!(?completion, "repl: done");
        self.state = State::Idle;
        self.deadline = None;
        self.events.push_back(Event::Done(completion));
    }

    fn fail(&mut self, error: Error) {
        self.state = State::Idle;
        self.deadline = None;
        self.mode = ReplMode::Unknown;
        self.tx.clear();
        self.events.push_back(Event::Failed(error));
    }

    /// Advance the current request as far as the input and the clock allow.
    fn process(&mut self, now: Instant) {
        // Each pass either makes progress or returns.
        loop {
            let progressed = match std::mem::replace(&mut self.state, State::Idle) {
                State::Idle => false,
                State::Interrupt { sent, at } => self.step_interrupt(sent, at, now),
                State::RawBanner { completion } => self.step_raw_banner(completion),
                State::Rebooting { completion } => self.step_rebooting(completion, now),
                State::FriendlyPrompt => self.step_friendly(),
                State::Exec(job) => self.step_exec(job, now),
            };
            if !progressed {
                return;
            }
        }
    }

    fn step_interrupt(&mut self, sent: u8, at: Instant, now: Instant) -> bool {
        if now < at + self.config.timeouts.interrupt_pause {
            self.state = State::Interrupt { sent, at };
            return false;
        }
        if sent == 1 {
            // A second Ctrl-C catches a program that swallowed the first one.
            self.tx.push_back(vec![CTRL_C]);
            self.state = State::Interrupt { sent: 2, at: now };
            return false;
        }
        // What the program printed while dying belongs to nobody.
        if !self.rx.is_empty() {
            tracing::debug!(output = ?Escaped(&self.rx), "repl: output around the interrupt");
            self.rx.clear();
        }
        self.mode = ReplMode::Unknown;
        self.finish(Completion::Interrupted);
        false
    }

    fn step_raw_banner(&mut self, completion: Completion) -> bool {
        match find_prompt_after(&self.rx, RAW_BANNER) {
            Some(end) => {
                self.rx.drain(..end);
                self.mode = ReplMode::Raw;
                self.finish(completion);
            }
            None => {
                trim_search_buffer(&mut self.rx, RAW_BANNER.len() + 4);
                self.state = State::RawBanner { completion };
            }
        }
        false
    }

    fn step_rebooting(&mut self, completion: Completion, now: Instant) -> bool {
        let raw = find_prompt_after(&self.rx, RAW_BANNER);
        let friendly = find(&self.rx, FRIENDLY_PROMPT).map(|i| i + FRIENDLY_PROMPT.len());
        match (raw, friendly) {
            (Some(r), f) if f.is_none_or(|f| r < f) => {
                // A board: back in the raw REPL by itself.
                self.rx.drain(..r);
                self.mode = ReplMode::Raw;
                self.finish(completion);
                false
            }
            (_, Some(f)) => {
                // Back in the friendly REPL (the unix port restarted): enter raw again.
                tracing::debug!("repl: the device came back friendly; entering the raw REPL");
                self.rx.drain(..f);
                self.tx.push_back(vec![b'\r', CTRL_A]);
                self.set_deadline(
                    now,
                    "entering the raw REPL after a soft reset",
                    self.config.timeouts.enter_raw,
                );
                self.state = State::RawBanner { completion };
                true
            }
            _ => {
                trim_search_buffer(&mut self.rx, RAW_BANNER.len() + 4);
                self.state = State::Rebooting { completion };
                false
            }
        }
    }

    fn step_friendly(&mut self) -> bool {
        match find(&self.rx, FRIENDLY_PROMPT) {
            Some(i) => {
                self.rx.drain(..i + FRIENDLY_PROMPT.len());
                self.mode = ReplMode::Friendly;
                self.finish(Completion::LeftRaw);
            }
            None => {
                trim_search_buffer(&mut self.rx, FRIENDLY_PROMPT.len());
                self.state = State::FriendlyPrompt;
            }
        }
        false
    }

    fn step_exec(&mut self, mut job: Box<ExecJob>, now: Instant) -> bool {
        let t = self.config.timeouts.clone();
        match job.step {
            ExecStep::PasteReply => {
                if self.rx.len() < 2 {
                    self.state = State::Exec(job);
                    return false;
                }
                if self.rx[0] == b'r' {
                    // A raw banner: either this firmware's answer (it has no
                    // raw-paste and our Ctrl-A re-printed it), or the late
                    // answer to an earlier Ctrl-A that a running program left
                    // unread. What follows it decides.
                    let Some(end) = find_prompt_after(&self.rx, RAW_BANNER) else {
                        self.state = State::Exec(job);
                        return false;
                    };
                    let reply_follows = matches!(self.rx.get(end), Some(b'R' | b'r'));
                    let grace_over = job.next_chunk.is_some_and(|at| now >= at);
                    if self.paste_supported == Some(true) || reply_follows {
                        tracing::debug!(stale = ?Escaped(&self.rx[..end]), "repl: skipping a late raw banner");
                        self.rx.drain(..end);
                        job.next_chunk = None;
                        self.state = State::Exec(job);
                        return true;
                    }
                    if self.rx.len() == end && !grace_over {
                        // Nothing after it yet: a raw-paste reply may still come.
                        job.next_chunk.get_or_insert(now + LATE_BANNER_GRACE);
                        self.state = State::Exec(job);
                        return false;
                    }
                    job.next_chunk = None;
                }
                let reply = [self.rx[0], self.rx[1]];
                self.rx.drain(..2);
                match &reply {
                    b"R\x01" => {
                        self.paste_supported = Some(true);
                        job.step = ExecStep::PasteWindow;
                    }
                    b"R\x00" => {
                        // Understood but not supported; the raw REPL waits for code.
                        tracing::debug!("repl: raw-paste refused, using the plain raw REPL");
                        self.paste_supported = Some(false);
                        if let Err(e) = check_code(&job.code, false) {
                            self.fail(e);
                            return false;
                        }
                        job.step = ExecStep::PlainSend;
                        job.next_chunk = Some(now);
                        self.deadline = None;
                    }
                    [b'r', _] => {
                        // Firmware without raw-paste: our Ctrl-A re-printed
                        // "raw REPL; CTRL-B to exit\r\n>".
                        tracing::debug!(
                            "repl: no raw-paste on this firmware, using the plain raw REPL"
                        );
                        self.paste_supported = Some(false);
                        if let Err(e) = check_code(&job.code, false) {
                            self.fail(e);
                            return false;
                        }
                        job.step = ExecStep::PasteFallbackPrompt;
                    }
                    other => {
                        self.fail(Error::Protocol(format!(
                            "unexpected answer to the raw-paste request: {:?}",
                            Escaped(other)
                        )));
                        return false;
                    }
                }
            }
            ExecStep::PasteFallbackPrompt => match self.rx.iter().position(|&b| b == b'>') {
                Some(i) => {
                    self.rx.drain(..=i);
                    job.step = ExecStep::PlainSend;
                    job.next_chunk = Some(now);
                    self.deadline = None;
                }
                None => {
                    self.state = State::Exec(job);
                    return false;
                }
            },
            ExecStep::PasteWindow => {
                if self.rx.len() < 2 {
                    self.state = State::Exec(job);
                    return false;
                }
                let window = u16::from_le_bytes([self.rx[0], self.rx[1]]) as usize;
                self.rx.drain(..2);
                if window == 0 {
                    self.fail(Error::Protocol(
                        "the device announced a raw-paste window of 0 bytes".into(),
                    ));
                    return false;
                }
                tracing::debug!(window, "repl: raw-paste window");
                job.window = window;
                job.credit = window;
                job.out.raw_paste = true;
                job.step = ExecStep::PasteSend;
                self.set_deadline(now, "a raw-paste flow-control grant", t.handshake);
            }
            ExecStep::PasteSend => {
                // Grants and aborts first.
                let mut consumed = 0;
                let mut abort = false;
                for &b in &self.rx {
                    consumed += 1;
                    match b {
                        CTRL_A => job.credit += job.window,
                        CTRL_D => {
                            abort = true;
                            break;
                        }
                        other => {
                            self.rx.drain(..consumed);
                            self.fail(Error::Protocol(format!(
                                "unexpected byte {other:#04x} from the device during raw-paste"
                            )));
                            return false;
                        }
                    }
                }
                self.rx.drain(..consumed);
                if consumed > 0 {
                    // Progress: the device is alive.
                    self.set_deadline(now, "a raw-paste flow-control grant", t.handshake);
                }
                if abort {
                    // The device stops reading (usually a syntax error part-way):
                    // acknowledge, send nothing more; its output follows, no ack.
                    tracing::debug!(sent = job.sent, "repl: device ended raw-paste early");
                    self.tx.push_back(vec![CTRL_D]);
                    return self.code_delivered(job, now);
                }
                if job.credit > 0 && job.sent < job.code.len() {
                    let n = job.credit.min(job.code.len() - job.sent);
                    self.tx.push_back(job.code[job.sent..job.sent + n].to_vec());
                    job.sent += n;
                    job.credit -= n;
                    self.set_deadline(now, "a raw-paste flow-control grant", t.handshake);
                }
                if job.sent == job.code.len() {
                    self.tx.push_back(vec![CTRL_D]);
                    job.step = ExecStep::PasteAck;
                    self.set_deadline(
                        now,
                        "the device to compile the code (raw-paste ack)",
                        t.handshake,
                    );
                } else {
                    self.state = State::Exec(job);
                    return false;
                }
            }
            ExecStep::PasteAck => {
                // Late grants may still come before the ack.
                match self.rx.iter().position(|&b| b != CTRL_A) {
                    Some(i) if self.rx[i] == CTRL_D => {
                        self.rx.drain(..=i);
                        return self.code_delivered(job, now);
                    }
                    Some(i) => {
                        let got = self.rx[i];
                        self.fail(Error::Protocol(format!(
                            "unexpected byte {got:#04x} while waiting for the raw-paste ack"
                        )));
                        return false;
                    }
                    None => {
                        self.rx.clear();
                        self.state = State::Exec(job);
                        return false;
                    }
                }
            }
            ExecStep::PlainSend => {
                if job.next_chunk.is_some_and(|at| now < at) {
                    self.state = State::Exec(job);
                    return false;
                }
                let chunk = self.config.plain_chunk.max(1);
                let n = chunk.min(job.code.len() - job.sent);
                if n > 0 {
                    self.tx.push_back(job.code[job.sent..job.sent + n].to_vec());
                    job.sent += n;
                }
                if job.sent < job.code.len() {
                    job.next_chunk = Some(now + self.config.plain_chunk_pause);
                    self.state = State::Exec(job);
                    return false;
                }
                self.tx.push_back(vec![CTRL_D]);
                job.next_chunk = None;
                job.step = ExecStep::PlainOk;
                self.set_deadline(now, "the raw REPL's OK", t.handshake);
            }
            ExecStep::PlainOk => {
                if self.rx.len() < 2 {
                    self.state = State::Exec(job);
                    return false;
                }
                if &self.rx[..2] != b"OK" {
                    let got = self.rx.clone();
                    self.fail(Error::Protocol(format!(
                        "expected OK from the raw REPL, got {:?}",
                        Escaped(&got)
                    )));
                    return false;
                }
                self.rx.drain(..2);
                return self.code_delivered(job, now);
            }
            ExecStep::Stdout | ExecStep::Stderr => {
                let stream = if job.step == ExecStep::Stdout {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                let end = self.rx.iter().position(|&b| b == CTRL_D);
                let take = end.unwrap_or(self.rx.len());
                if take > 0 {
                    let chunk: Vec<u8> = self.rx.drain(..take).collect();
                    match stream {
                        Stream::Stdout => job.out.stdout.extend_from_slice(&chunk),
                        Stream::Stderr => job.out.stderr.extend_from_slice(&chunk),
                    }
                    self.events.push_back(Event::Output(stream, chunk));
                }
                if end.is_none() {
                    self.state = State::Exec(job);
                    return false;
                }
                self.rx.drain(..1);
                if job.step == ExecStep::Stdout {
                    job.step = ExecStep::Stderr;
                } else {
                    job.step = ExecStep::Prompt;
                    self.set_deadline(now, "the raw REPL prompt after the program", t.handshake);
                }
            }
            ExecStep::Prompt => {
                let prompt = self.rx.iter().position(|&b| b == b'>');
                let searched = &self.rx[..prompt.unwrap_or(self.rx.len())];
                if find(searched, SOFT_REBOOT).is_some() || find(searched, BOOT_BANNER).is_some() {
                    // The program ended the REPL (SystemExit): the device
                    // reset; report its output once the REPL is back.
                    tracing::debug!("repl: the program's end reset the device");
                    self.state = State::Rebooting {
                        completion: Completion::Exec(job.out),
                    };
                    self.set_deadline(
                        now,
                        "the REPL after the program reset the device",
                        t.soft_reset,
                    );
                    return true;
                }
                let Some(i) = prompt else {
                    self.state = State::Exec(job);
                    return false;
                };
                if i > 0 {
                    tracing::debug!(extra = ?Escaped(&self.rx[..i]), "repl: bytes before the raw prompt");
                }
                self.rx.drain(..=i);
                self.mode = ReplMode::Raw;
                self.finish(Completion::Exec(job.out));
                return false;
            }
        }
        self.state = State::Exec(job);
        true
    }

    /// The device has the whole program: follow its output or stop here.
    fn code_delivered(&mut self, mut job: Box<ExecJob>, now: Instant) -> bool {
        if job.follow {
            job.step = ExecStep::Stdout;
            self.set_deadline(now, "the program's output", self.config.timeouts.exec);
            self.state = State::Exec(job);
            true
        } else {
            self.mode = ReplMode::Running;
            self.running_paste = job.out.raw_paste;
            self.finish(Completion::Started {
                raw_paste: job.out.raw_paste,
            });
            false
        }
    }
}

/// Reject code holding bytes the REPL would take as commands.
fn check_code(code: &[u8], paste: bool) -> crate::Result<()> {
    let forbidden: &[u8] = if paste {
        &[CTRL_C, CTRL_D]
    } else {
        &[CTRL_A, CTRL_B, CTRL_C, CTRL_D]
    };
    match code.iter().position(|b| forbidden.contains(b)) {
        Some(i) => Err(Error::InvalidArgument(format!(
            "code byte {i} is {:#04x}, which the {} REPL takes as a command; escape it in a string literal",
            code[i],
            if paste { "raw-paste" } else { "raw" }
        ))),
        None => Ok(()),
    }
}

/// Index of the first occurrence of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The index just past the first `>` that follows `marker`.
fn find_prompt_after(buf: &[u8], marker: &[u8]) -> Option<usize> {
    let at = find(buf, marker)? + marker.len();
    buf[at..]
        .iter()
        .position(|&b| b == b'>')
        .map(|i| at + i + 1)
}

/// Keep only the tail of a buffer being searched, so that noise cannot grow it without bound.
fn trim_search_buffer(buf: &mut Vec<u8>, keep: usize) {
    const LIMIT: usize = 64 * 1024;
    if buf.len() > LIMIT {
        let cut = buf.len() - keep;
        buf.drain(..cut);
    }
}

/// Bytes shown as an escaped string in logs and errors, cut after 200 bytes.
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl std::fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.0[..self.0.len().min(200)];
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if self.0.len() > shown.len() {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> (ReplMachine, Instant) {
        let mut m = ReplMachine::default();
        m.set_mode(ReplMode::Raw);
        (m, Instant::now())
    }

    fn sent(m: &mut ReplMachine) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = m.poll_transmit() {
            out.extend(b);
        }
        out
    }

    fn done(m: &mut ReplMachine) -> Completion {
        loop {
            match m.poll_event() {
                Some(Event::Done(c)) => return c,
                Some(Event::Failed(e)) => panic!("failed: {e}"),
                Some(Event::Output(..)) => continue,
                None => panic!("no completion yet"),
            }
        }
    }

    #[test]
    fn raw_paste_respects_the_window_and_splits_the_output() {
        let (mut m, t) = machine();
        let code = vec![b'x'; 600];
        m.start(
            Request::Exec {
                code: code.clone(),
                follow: true,
            },
            t,
        )
        .unwrap();
        assert_eq!(sent(&mut m), RAW_PASTE_REQUEST);
        // Window 128, plus the grant that follows at once: 256 bytes of credit.
        m.handle_input(b"R\x01\x80\x00\x01", t);
        assert_eq!(sent(&mut m).len(), 256);
        m.handle_input(b"\x01", t);
        assert_eq!(sent(&mut m).len(), 128);
        m.handle_input(b"\x01\x01", t);
        assert_eq!(sent(&mut m).len(), 216 + 1, "the rest, then Ctrl-D");
        assert!(m.poll_event().is_none());
        // A late grant, then the compile ack, then stdout/stderr/prompt.
        m.handle_input(b"\x01\x04out\n", t);
        m.handle_input(b"\x04err\x04>", t);
        let mut streamed = Vec::new();
        let completion = loop {
            match m.poll_event().expect("an event") {
                Event::Output(s, b) => streamed.push((s, b)),
                Event::Done(c) => break c,
                Event::Failed(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            streamed,
            vec![
                (Stream::Stdout, b"out\n".to_vec()),
                (Stream::Stderr, b"err".to_vec())
            ]
        );
        let Completion::Exec(out) = completion else {
            panic!("{completion:?}")
        };
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err");
        assert!(out.raw_paste);
        assert_eq!(m.mode(), ReplMode::Raw);
        assert_eq!(m.raw_paste_supported(), Some(true));
    }

    #[test]
    fn refused_raw_paste_falls_back_to_paced_plain_chunks() {
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: vec![b'y'; 600],
                follow: true,
            },
            t,
        )
        .unwrap();
        assert_eq!(sent(&mut m), RAW_PASTE_REQUEST);
        m.handle_input(b"R\x00", t);
        assert_eq!(sent(&mut m).len(), 256);
        let next = m.poll_timeout().unwrap();
        assert_eq!(next, t + Duration::from_millis(10));
        m.handle_timeout(next);
        assert_eq!(sent(&mut m).len(), 256);
        m.handle_timeout(next + Duration::from_millis(10));
        assert_eq!(sent(&mut m), [vec![b'y'; 88], vec![CTRL_D]].concat());
        m.handle_input(b"OK\x04\x04>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        assert!(!out.raw_paste);
        assert_eq!(m.raw_paste_supported(), Some(false));
        // Not asked again on this link.
        m.start(
            Request::Exec {
                code: b"1".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        assert_eq!(sent(&mut m), b"1\x04");
    }

    #[test]
    fn old_firmware_without_raw_paste_is_detected_by_its_banner() {
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: b"print(1)".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        let _ = sent(&mut m);
        m.handle_input(b"raw REPL; CTRL-B to exit\r\n>", t);
        assert!(
            sent(&mut m).is_empty(),
            "a raw-paste reply may still follow"
        );
        m.handle_timeout(t + LATE_BANNER_GRACE);
        assert_eq!(sent(&mut m), b"print(1)\x04");
        m.handle_input(b"OK1\r\n\x04\x04>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        assert_eq!(out.stdout, b"1\r\n");
    }

    #[test]
    fn a_late_raw_banner_before_the_paste_reply_is_skipped() {
        let (mut m, t) = machine();
        let exec = |m: &mut ReplMachine, code: &[u8]| {
            m.start(
                Request::Exec {
                    code: code.to_vec(),
                    follow: true,
                },
                t,
            )
            .unwrap();
            assert_eq!(sent(m), RAW_PASTE_REQUEST);
        };
        exec(&mut m, b"1");
        m.handle_input(b"R\x01\x80\x00\x01", t);
        assert_eq!(sent(&mut m), b"1\x04");
        m.handle_input(b"\x04\x04\x04>", t);
        let _ = done(&mut m);
        // A Ctrl-A typed while a program ran is answered late, in two pieces.
        exec(&mut m, b"2");
        m.handle_input(b"raw REPL; CTRL-", t);
        assert!(sent(&mut m).is_empty());
        m.handle_input(b"B to exit\r\n>R\x01\x80\x00\x01", t);
        assert_eq!(sent(&mut m), b"2\x04", "still raw-paste");
        m.handle_input(b"\x04two\x04\x04>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        assert_eq!(out.stdout, b"two");
        assert!(out.raw_paste);
    }

    #[test]
    fn a_late_raw_banner_on_a_fresh_session_is_told_from_no_raw_paste() {
        // Support not known yet: a stale banner followed by the paste reply.
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: b"1".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        assert_eq!(sent(&mut m), RAW_PASTE_REQUEST);
        m.handle_input(b"raw REPL; CTRL-B to exit\r\n>", t);
        assert!(sent(&mut m).is_empty(), "waits for what follows the banner");
        m.handle_input(b"R\x01\x80\x00\x01", t + Duration::from_millis(300));
        assert_eq!(sent(&mut m), b"1\x04", "raw-paste, not the plain REPL");
        m.handle_input(b"\x04one\x04\x04>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        assert_eq!(out.stdout, b"one");
        assert!(out.raw_paste);

        // Firmware without raw-paste: the banner alone, nothing after it.
        let (mut old, t) = machine();
        old.start(
            Request::Exec {
                code: b"2".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        let _ = sent(&mut old);
        old.handle_input(b"raw REPL; CTRL-B to exit\r\n>", t);
        assert!(sent(&mut old).is_empty());
        let at = old.poll_timeout().expect("a grace timer");
        assert!(at <= t + LATE_BANNER_GRACE);
        old.handle_timeout(at);
        assert_eq!(old.raw_paste_supported(), Some(false));
        let mut plain = Vec::new();
        for _ in 0..100 {
            plain.extend(sent(&mut old));
            if plain.ends_with(b"\x04") {
                break;
            }
            let Some(next) = old.poll_timeout() else {
                break;
            };
            old.handle_timeout(next);
        }
        assert!(plain.ends_with(b"2\x04"), "{plain:?}");
    }

    #[test]
    fn device_abort_mid_paste_is_answered_and_output_follows() {
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: vec![b'z'; 1000],
                follow: true,
            },
            t,
        )
        .unwrap();
        let _ = sent(&mut m);
        m.handle_input(b"R\x01\x80\x00\x01", t);
        assert_eq!(sent(&mut m).len(), 256);
        m.handle_input(b"\x04", t);
        assert_eq!(sent(&mut m), b"\x04", "acknowledge, send nothing more");
        m.handle_input(b"\x04Traceback\nSyntaxError: invalid syntax\n\x04>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        match out.exception() {
            Some(Error::DeviceException {
                exception, message, ..
            }) => {
                assert_eq!(exception, "SyntaxError");
                assert_eq!(message, "invalid syntax");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_step_times_out() {
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: b"1".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        let _ = sent(&mut m);
        let at = m.poll_timeout().unwrap();
        assert_eq!(at, t + Timeouts::default().handshake);
        m.handle_timeout(at - Duration::from_millis(1));
        assert!(m.poll_event().is_none());
        m.handle_timeout(at);
        match m.poll_event() {
            Some(Event::Failed(Error::Timeout { what, .. })) => assert!(what.contains("raw-paste")),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.mode(), ReplMode::Unknown);
        assert!(!m.is_busy());
    }

    #[test]
    fn interrupt_sends_two_ctrl_c_with_a_pause() {
        let mut m = ReplMachine::default();
        let t = Instant::now();
        m.start(Request::Interrupt, t).unwrap();
        assert_eq!(sent(&mut m), b"\r\x03");
        let pause = Timeouts::default().interrupt_pause;
        assert_eq!(m.poll_timeout(), Some(t + pause));
        m.handle_timeout(t + pause);
        assert_eq!(sent(&mut m), b"\x03");
        m.handle_input(b"KeyboardInterrupt\r\n>>> ", t + pause);
        m.handle_timeout(t + pause * 2);
        assert_eq!(done(&mut m), Completion::Interrupted);
        assert!(
            m.take_received().is_empty(),
            "output around the interrupt dropped"
        );
    }

    #[test]
    fn soft_reset_handles_a_board_and_a_restarted_unix_port() {
        // A board comes back to the raw REPL by itself.
        let (mut m, t) = machine();
        m.start(Request::SoftReset, t).unwrap();
        assert_eq!(sent(&mut m), b"\x04");
        m.handle_input(
            b"OK\r\nMPY: soft reboot\r\nboot\r\nraw REPL; CTRL-B to exit\r\n>",
            t,
        );
        assert_eq!(done(&mut m), Completion::SoftReset);
        assert_eq!(m.mode(), ReplMode::Raw);

        // The unix port comes back friendly: the machine enters raw again.
        let (mut m, t) = machine();
        m.start(Request::SoftReset, t).unwrap();
        let _ = sent(&mut m);
        m.handle_input(b"OK\r\nMicroPython 1.2 on x\r\nType \"help()\"\r\n>>> ", t);
        assert_eq!(sent(&mut m), b"\r\x01");
        m.handle_input(b"\r\nraw REPL; CTRL-B to exit\r\n>", t);
        assert_eq!(done(&mut m), Completion::SoftReset);
    }

    #[test]
    fn system_exit_reports_the_output_after_the_reboot() {
        let (mut m, t) = machine();
        m.start(
            Request::Exec {
                code: b"x".to_vec(),
                follow: true,
            },
            t,
        )
        .unwrap();
        let _ = sent(&mut m);
        m.handle_input(b"R\x01\x80\x00\x01", t);
        let _ = sent(&mut m);
        m.handle_input(b"\x04bye\n\x04\x04MPY: soft reboot\r\n", t);
        assert!(m
            .poll_event()
            .is_some_and(|e| matches!(e, Event::Output(..))));
        assert!(m.poll_event().is_none(), "not done before the REPL is back");
        m.handle_input(b"raw REPL; CTRL-B to exit\r\n>", t);
        let Completion::Exec(out) = done(&mut m) else {
            panic!()
        };
        assert_eq!(out.stdout, b"bye\n");
        assert_eq!(m.mode(), ReplMode::Raw);
    }

    #[test]
    fn start_checks_mode_and_code() {
        let mut m = ReplMachine::default();
        let t = Instant::now();
        let exec = |code: &[u8]| Request::Exec {
            code: code.to_vec(),
            follow: true,
        };
        assert!(m.start(exec(b"1"), t).is_err(), "not in the raw REPL");
        m.set_mode(ReplMode::Raw);
        assert!(m.start(exec(b"a\x04b"), t).is_err());
        assert!(m.start(exec(b"a\x03b"), t).is_err());
        m.config_mut().raw_paste = false;
        assert!(
            m.start(exec(b"a\x01b"), t).is_err(),
            "plain raw takes Ctrl-A as a command"
        );
        assert!(!m.is_busy());
        m.start(exec(b"a\x05b"), t).unwrap();
        assert!(m.start(exec(b"1"), t).is_err(), "one request at a time");
    }

    #[test]
    fn exceptions_are_parsed_from_the_last_line() {
        let e = parse_exception("Traceback (most recent call last):\r\n  File \"<stdin>\", line 1, in <module>\r\nOSError: [Errno 2] ENOENT\r\n");
        match e {
            Error::DeviceException {
                exception, message, ..
            } => {
                assert_eq!(exception, "OSError");
                assert_eq!(message, "[Errno 2] ENOENT");
            }
            other => panic!("{other:?}"),
        }
        match parse_exception("KeyboardInterrupt: \n") {
            Error::DeviceException {
                exception, message, ..
            } => {
                assert_eq!(exception, "KeyboardInterrupt");
                assert_eq!(message, "");
            }
            other => panic!("{other:?}"),
        }
        assert!(ExecOutput::default().exception().is_none());
    }
}
