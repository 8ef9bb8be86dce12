//! Talking to one serial port: open, configure, move bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{DataBits, FlowControl, Parity, SerialPort, SerialStream, StopBits};

use crate::error::{Error, Result};
use crate::transport::Transport;

/// A serial port to a board's REPL, as an async byte stream.
///
/// The port is set to 8N1, no flow control, raw mode (no echo, no line
/// editing, no CR/LF translation, no XON/XOFF, no stripping of the eighth
/// bit), and opened for exclusive use. Reads return as soon as any byte has
/// arrived; writes wait while the driver's buffer is full. On Unix the port's
/// file descriptor is non-blocking and registered with the tokio reactor; on
/// Windows the COM handle is driven through overlapped I/O, so no thread is
/// spent per port and nothing polls.
///
/// # DTR and RTS
///
/// ESP32 boards reset from these two lines: the two-transistor auto-reset
/// circuit behind a CP210x/CH340 holds EN low while RTS is asserted and DTR
/// is not, and the ESP32-S3/C3 USB-Serial-JTAG and MicroPython's TinyUSB
/// console do the same on that state. Both asserted or both released never
/// reset a board. Opening asserts both together (Linux and macOS raise them in
/// one step, and Windows is told DTR first, then RTS), so the lines never pass
/// through the reset state and the board keeps running. Both stay asserted
/// while the port is open: MicroPython's native USB console (ESP32-S2/S3,
/// RP2040) takes DTR as "a terminal is attached" and holds its output back
/// otherwise. Closing releases both together.
#[derive(Debug)]
pub struct SerialTransport {
    stream: SerialStream,
    path: String,
    baud: u32,
}

impl SerialTransport {
    /// Open the serial port at `path` (`/dev/ttyUSB0`, `COM3`, a pty slave)
    /// at `baud` bits per second, giving up after `timeout`.
    ///
    /// The baud rate matters only for USB-to-UART bridges (MicroPython
    /// boards use 115200, see [`super::DEFAULT_BAUD`]); a native USB port
    /// ignores it. Must be called within a tokio runtime.
    pub async fn open(path: &str, baud: u32, timeout: Duration) -> Result<Self> {
        if baud == 0 {
            // B0 means "hang up": it would drop DTR and RTS.
            return Err(Error::InvalidArgument(format!(
                "baud rate 0 for serial port {path}"
            )));
        }
        if baud == 1200 {
            tracing::warn!(
                %path,
                "1200 baud: closing a native USB port at this rate makes some boards reboot into their bootloader"
            );
        }
        let owned = path.to_owned();
        let opening = tokio::task::spawn_blocking(move || open_blocking(&owned, baud));
        let stream = tokio::time::timeout(timeout, opening)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("opening serial port {path}"),
                after: timeout,
            })?
            .map_err(|join| Error::Transport {
                target: path.to_owned(),
                source: io::Error::other(join),
            })?
            .map_err(|source| Error::Transport {
                target: path.to_owned(),
                source,
            })?;
        tracing::debug!(%path, baud, "serial port open");
        Ok(Self {
            stream,
            path: path.to_owned(),
            baud,
        })
    }

    /// The path the port was opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The baud rate the port was opened with.
    pub fn baud(&self) -> u32 {
        self.baud
    }
}

fn open_blocking(path: &str, baud: u32) -> io::Result<SerialStream> {
    let builder = tokio_serial::new(path, baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        // Leave DTR as the OS sets it on open; both lines are asserted below.
        .preserve_dtr_on_open();
    let mut stream = SerialStream::open(&builder).map_err(open_error)?;
    // DTR first, then RTS: the lines never pass through (DTR off, RTS on),
    // the state that resets an ESP32. On Linux and macOS both are already
    // asserted and this changes nothing. A pseudo-terminal has no modem lines.
    if let Err(e) = stream.write_data_terminal_ready(true) {
        tracing::debug!(%path, error = %e, "could not assert DTR");
    }
    if let Err(e) = stream.write_request_to_send(true) {
        tracing::debug!(%path, error = %e, "could not assert RTS");
    }
    Ok(stream)
}

/// A serialport error as an [`io::Error`] that says what went wrong and what to do.
fn open_error(e: tokio_serial::Error) -> io::Error {
    let detail = e.description.clone();
    let io: io::Error = e.into();
    let hint = match io.kind() {
        io::ErrorKind::NotFound if detail.contains("lock") || detail.contains("busy") => {
            " (another program, such as a terminal or mpremote, has the port open)"
        }
        io::ErrorKind::PermissionDenied if cfg!(target_os = "linux") => {
            " (on Linux, join the group that owns the port, usually `dialout`, and log in again)"
        }
        _ => "",
    };
    io::Error::new(
        io.kind(),
        format!("cannot open serial port: {detail}{hint}"),
    )
}

impl Transport for SerialTransport {
    fn peer(&self) -> String {
        self.path.clone()
    }
}

impl AsyncRead for SerialTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SerialTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    /// Written bytes are already with the driver, as with a socket. The
    /// underlying flush would wait (`tcdrain`) for the UART to shift them
    /// out, blocking the runtime thread, so it is not called; closing the
    /// port still lets the driver drain them.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A serial line has no half-close: nothing to do.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
