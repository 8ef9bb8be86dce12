//! A transport paced by the device's credit: an OTA session on a serial
//! console (docs/protocol.md, "Flow control").
//!
//! Writes never put more than the window in flight: with no credit left, a
//! write waits, reading from the link until the device grants more. Reads
//! deliver the session's bytes with the device's grant bytes taken out (by
//! [`GrantScanner`]); whatever a waiting write read is kept for them. The
//! counting itself is the sans-IO [`Credit`], as in the file agent's sessions.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Transport;
use crate::protocol::credit::{Credit, CreditWindow, GrantScanner};

/// `inner`, with the host's writes paced by the device's grants.
#[derive(Debug)]
pub struct CreditTransport<T> {
    inner: T,
    credit: Credit,
    scanner: GrantScanner,
    /// Session bytes received and not read yet (from `pos` on).
    pending: Vec<u8>,
    pos: usize,
    /// The link ended (after `pending`).
    eof: bool,
    scratch: Box<[u8]>,
    grants: u64,
    /// The session ended: bytes pass as they are.
    passthrough: bool,
}

impl<T> CreditTransport<T> {
    /// Pace writes to `inner` with `window`; nothing has been sent yet.
    pub fn new(inner: T, window: CreditWindow) -> Self {
        Self {
            inner,
            credit: Credit::new(window),
            scanner: GrantScanner::new(),
            pending: Vec::new(),
            pos: 0,
            eof: false,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            grants: 0,
            passthrough: false,
        }
    }

    /// Grant bytes received so far.
    pub fn grants(&self) -> u64 {
        self.grants
    }
}

impl<T: AsyncRead + Unpin> CreditTransport<T> {
    /// Read once from the link into `pending`, counting grants. `Ready(Ok)`
    /// after something was read (perhaps only grants) or at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut buf = ReadBuf::new(&mut self.scratch);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let got = buf.filled();
        if got.is_empty() {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
        }
        if self.passthrough {
            self.pending.extend_from_slice(got);
            return Poll::Ready(Ok(()));
        }
        let grants = self.scanner.feed(got, &mut self.pending);
        for _ in 0..grants {
            self.credit.grant();
        }
        self.grants += grants as u64;
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> Transport for CreditTransport<T> {
    fn peer(&self) -> String {
        self.inner.peer()
    }

    fn abort(&mut self) {
        self.inner.abort()
    }

    fn passthrough(&mut self) {
        self.passthrough = true;
        self.inner.passthrough()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CreditTransport<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.pending.len() {
                let n = (this.pending.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.pending[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for CreditTransport<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        loop {
            let n = this.credit.take(buf.len());
            if n > 0 || buf.is_empty() {
                let written = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
                match &written {
                    Poll::Ready(Ok(k)) => this.credit.untake(n - k),
                    _ => this.credit.untake(n),
                }
                return written;
            }
            // No credit: wait for a grant (keeping what else arrives).
            if this.eof {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the device closed the console while the host waited for credit",
                )));
            }
            ready!(this.poll_fill(cx))?;
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The host never has more than the window in flight; reads see the
    /// device's bytes without its grants.
    #[tokio::test]
    async fn writes_wait_for_grants_and_reads_skip_them() {
        let (host, mut device) = tokio::io::duplex(64 * 1024);
        let window = CreditWindow {
            credit: 64,
            window: 128,
        };
        let mut t = CreditTransport::new(host, window);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let expected = payload.clone();
        let device_side = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            device.write_all(b"uota 1 {}\n").await.unwrap();
            let mut granted = 0;
            while got.len() < 1000 {
                let n = device.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
                // Never more in flight than the window.
                assert!(got.len() <= granted * 64 + 128, "{} bytes", got.len());
                while (granted + 1) * 64 <= got.len() {
                    device.write_all(&[0x06]).await.unwrap();
                    granted += 1;
                }
            }
            device.write_all(&[2, 0, 0, 0, 1, 0x06]).await.unwrap();
            got
        });
        t.write_all(&payload).await.unwrap();
        let mut line = vec![0u8; 10];
        t.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"uota 1 {}\n");
        let mut frame = vec![0u8; 6];
        t.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [2, 0, 0, 0, 1, 0x06]);
        assert_eq!(device_side.await.unwrap(), expected);
        assert!(t.grants() >= 14);
    }
}
