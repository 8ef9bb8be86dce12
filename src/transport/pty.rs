//! A terminal opened by path (Unix): a pseudo-terminal such as a serial
//! virtual device's `/dev/pts/N`, or any tty, in raw mode.
//!
//! The terminal is put in raw mode (8 data bits, no echo, no line editing,
//! no newline translation, no signals), so every byte passes through as is.
//! Input that was waiting before the open is dropped, as a freshly opened
//! serial port has none. For a real UART's line settings (baud rate, DTR/RTS)
//! use the serial transport.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Transport;
use crate::error::{Error, Result};

/// A tty opened by path, as an async byte stream.
#[derive(Debug)]
pub struct PtyTransport {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl PtyTransport {
    /// Open the terminal at `path` (not as the controlling terminal), in raw
    /// mode, dropping input that was already waiting. Needs a tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |source: io::Error| Error::Transport {
            target: path.display().to_string(),
            source,
        };
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
        let raw = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly opened fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if unsafe { libc::isatty(fd.as_raw_fd()) } != 1 {
            return Err(err(io::Error::other("not a terminal")));
        }
        set_raw(fd.as_fd()).map_err(err)?;
        // SAFETY: plain ioctl on an fd we own.
        unsafe { libc::tcflush(fd.as_raw_fd(), libc::TCIFLUSH) };
        let fd = register(fd).map_err(err)?;
        tracing::debug!(path = %path.display(), "opened tty");
        Ok(Self { fd, path })
    }

    /// The path this terminal was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Put a terminal in raw mode: 8N1 bytes through untouched, no echo, no
/// signals, reads return as soon as one byte is there.
pub(crate) fn set_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Register a nonblocking fd with tokio's reactor.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is a valid open fd, owned by the AsyncFd from now
    // on, and never replaced or closed while registered.
    Ok(unsafe { AsyncFd::register(fd)? })
}

/// `read(2)` into `buf`.
pub(crate) fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)` from `buf`.
pub(crate) fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reads.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Transport for PtyTransport {
    fn peer(&self) -> String {
        self.path.display().to_string()
    }
}

impl AsyncRead for PtyTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| read_fd(fd.as_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The other side of a pseudo-terminal went away: end of stream.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| write_fd(fd.as_fd(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
