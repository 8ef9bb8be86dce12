//! A serial virtual device (the MicroPython unix port on a pseudo-terminal),
//! for benchmarks and trying things by hand: prints the port to open, then
//! runs until killed (Ctrl-C or SIGTERM).
//!
//! ```text
//! cargo run --release --example serial_sim -- --root /tmp/dev [--baud 115200] [--rx-buffer 256] [--heap 256k] [--boot]
//! ```
//!
//! `--root DIR` is the device's filesystem (a host folder; `--image FILE`
//! takes a littlefs image instead), `--baud` throttles the link to a UART's
//! line rate, `--rx-buffer` drops what a UART receive buffer of that size
//! would, `--boot` runs `/boot.py` and `/main.py` at each boot like a
//! board.

#[cfg(unix)]
#[tokio::main]
async fn main() -> uota::Result<()> {
    use std::io::Write;
    use uota::sim::{SerialSimOptions, VirtualSerialDevice};

    let mut args = std::env::args().skip(1);
    let mut opts: Option<SerialSimOptions> = None;
    let (mut baud, mut heap, mut boot, mut rx_buffer) = (None, None, false, None);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| uota::Error::InvalidArgument(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--root" => opts = Some(SerialSimOptions::folder(value()?)),
            "--image" => opts = Some(SerialSimOptions::image(value()?)),
            "--baud" => {
                let v = value()?;
                baud = Some(v.parse().map_err(|_| {
                    uota::Error::InvalidArgument(format!("--baud {v}: not a number"))
                })?);
            }
            "--rx-buffer" => {
                let v = value()?;
                rx_buffer = Some(v.parse().map_err(|_| {
                    uota::Error::InvalidArgument(format!("--rx-buffer {v}: not a number"))
                })?);
            }
            "--heap" => heap = Some(value()?),
            "--boot" => boot = true,
            other => {
                return Err(uota::Error::InvalidArgument(format!(
                    "unknown argument {other}; usage: serial_sim --root DIR|--image FILE [--baud N] [--rx-buffer N] [--heap SIZE] [--boot]"
                )))
            }
        }
    }
    let mut opts =
        opts.ok_or_else(|| uota::Error::InvalidArgument("--root or --image is needed".into()))?;
    opts.baud = baud;
    opts.rx_buffer = rx_buffer;
    opts.heap_size = heap;
    opts.run_boot = boot;
    let dev = VirtualSerialDevice::start(opts).await?;
    println!("{}", dev.path().display());
    std::io::stdout().flush().ok();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| uota::Error::io("<signal>", e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    dev.stop().await
}

#[cfg(not(unix))]
fn main() {
    eprintln!("serial virtual devices need a Unix system (pseudo-terminals)");
    std::process::exit(2);
}
