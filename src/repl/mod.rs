//! MicroPython's REPL over any byte stream: interrupt a program, enter and
//! leave the raw REPL, run code (raw-paste mode with flow control when the
//! device has it, the plain raw REPL otherwise), soft-reset.
//!
//! - [`machine`]: the protocol as a sans-IO state machine ([`ReplMachine`]):
//!   bytes in, events out, time passed in. No I/O, no clock, no tokio.
//! - [`driver`]: [`Repl`], the async driver that runs the machine over a
//!   [`Transport`](crate::transport::Transport), with a timeout on every step.
//! - [`fs`]: the device filesystem over the REPL ([`fs::ReplFs`]): a small
//!   agent program speaking a compact binary protocol, with flow control,
//!   compression and verified atomic writes.
//! - [`info`]: what a board is ([`info::BoardInfo`]), the project's
//!   `.uota_cache.json`, and `mpy-cross`.
//! - [`bootstrap`]: installing the uota runtime on a board.
//!
//! The bytes exchanged are described in `docs/repl.md`.
//!
//! ```no_run
//! # async fn demo() -> uota::Result<()> {
//! use uota::repl::Repl;
//! use uota::transport::pty::PtyTransport;
//!
//! let port = PtyTransport::open("/dev/ttyUSB0")?;
//! let mut repl = Repl::new(port);
//! repl.interrupt().await?;
//! repl.enter_raw().await?;
//! let out = repl.exec("print(1 + 1)").await?;
//! assert_eq!(out.stdout_text().trim(), "2");
//! assert_eq!(repl.eval("2 ** 10").await?, "1024");
//! # Ok(()) }
//! ```

pub mod bootstrap;
pub mod driver;
pub mod fs;
pub mod info;
pub mod machine;

pub use driver::Repl;
pub use machine::{
    Completion, Event, ExecOutput, ReplConfig, ReplMachine, ReplMode, Request, Stream, Timeouts,
};
