//! Copy a local folder to a board over its REPL with uota's file agent
//! (`uota::repl::fs::ReplFs::put_tree`), and print what it took as one JSON
//! line, with knobs the command does not expose (credit, window, deflate).
//! The benchmark `benches/serial_copy.py` runs it. For everyday copies use
//! the command: `uota fs put LOCAL_DIR REMOTE_DIR --port PORT`.
//!
//! ```text
//! cargo run --release --example serial_put -- PORT LOCAL_DIR [REMOTE_DIR]
//!     [--baud N] [--fast] [--credit N] [--window N] [--no-deflate] [--force]
//! ```
//!
//! `PORT` is a serial port (`/dev/ttyUSB0`, opened at `--baud`, default
//! 115200) or a pseudo-terminal (`/dev/pts/N`, as a serial virtual device
//! prints). `--fast` uses `FsOptions::fast_link()` (USB CDC consoles and
//! ptys); `--force` sends files the board already has.

use std::time::{Duration, Instant};

use uota::repl::fs::{DeflateMode, FsOptions, ReplFs};
use uota::repl::Repl;
use uota::transport::BoxTransport;

#[tokio::main]
async fn main() -> uota::Result<()> {
    let mut positional = Vec::new();
    let mut opts = FsOptions::default();
    let mut baud = 115_200u32;
    let mut args = std::env::args().skip(1);
    let number = |arg: &str, v: Option<String>| -> uota::Result<usize> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| uota::Error::InvalidArgument(format!("{arg} needs a number")))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fast" => {
                let keep = (opts.deflate, opts.skip_unchanged);
                opts = FsOptions::fast_link();
                (opts.deflate, opts.skip_unchanged) = keep;
            }
            "--credit" => opts.credit = number(&arg, args.next())?,
            "--window" => opts.window = number(&arg, args.next())?,
            "--baud" => baud = number(&arg, args.next())? as u32,
            "--no-deflate" => opts.deflate = DeflateMode::Off,
            "--force" => opts.skip_unchanged = false,
            _ => positional.push(arg),
        }
    }
    let (port, local, remote) = match positional.as_slice() {
        [p, l] => (p.clone(), l.clone(), "/".to_string()),
        [p, l, r] => (p.clone(), l.clone(), r.clone()),
        _ => {
            return Err(uota::Error::InvalidArgument(
                "usage: serial_put PORT LOCAL_DIR [REMOTE_DIR] [--baud N] [--fast] [--credit N] [--window N] [--no-deflate] [--force]".into(),
            ))
        }
    };
    let started = Instant::now();
    let io = open(&port, baud).await?;
    let mut repl = Repl::new(io);
    let mut fs = ReplFs::open(&mut repl, opts).await?;
    let agent_up = started.elapsed();
    let report = fs.put_tree(local.as_ref(), &remote, &mut |_| {}).await?;
    let wbits = fs.info().wbits;
    fs.close().await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{{\"files\": {}, \"skipped\": {}, \"compressed\": {}, \"bytes\": {}, \"wire_bytes\": {}, \"seconds\": {:.3}, \"agent_seconds\": {:.3}, \"kb_per_s\": {:.1}, \"wbits\": {}}}",
        report.files_sent,
        report.files_skipped,
        report.files_compressed,
        report.bytes,
        report.wire_bytes,
        took,
        agent_up.as_secs_f64(),
        report.bytes as f64 / took / 1000.0,
        wbits.map_or("null".to_string(), |w| w.to_string()),
    );
    Ok(())
}

#[cfg(unix)]
async fn open(port: &str, baud: u32) -> uota::Result<BoxTransport> {
    if port.starts_with("/dev/pts/") {
        Ok(Box::new(uota::transport::pty::PtyTransport::open(port)?))
    } else {
        let t = uota::transport::serial::SerialTransport::open(port, baud, Duration::from_secs(5))
            .await?;
        Ok(Box::new(t))
    }
}

#[cfg(not(unix))]
async fn open(port: &str, baud: u32) -> uota::Result<BoxTransport> {
    let t =
        uota::transport::serial::SerialTransport::open(port, baud, Duration::from_secs(5)).await?;
    Ok(Box::new(t))
}
