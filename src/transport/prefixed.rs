//! A transport whose first bytes were already read by someone else.
//!
//! When a serial session hands the console from the REPL to the OTA protocol,
//! the REPL may have read bytes of the OTA reply along with its own; they are
//! replayed here before anything new is read from the link.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Transport;

/// `prefix`, then whatever `inner` delivers.
#[derive(Debug)]
pub struct PrefixedTransport<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> PrefixedTransport<T> {
    /// Deliver `prefix` before reading from `inner`.
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The inner transport and the prefix bytes not read yet.
    pub fn into_parts(mut self) -> (T, Vec<u8>) {
        let rest = self.prefix.split_off(self.pos);
        (self.inner, rest)
    }
}

impl<T: Transport> Transport for PrefixedTransport<T> {
    fn peer(&self) -> String {
        self.inner.peer()
    }

    fn abort(&mut self) {
        self.inner.abort()
    }

    fn passthrough(&mut self) {
        self.inner.passthrough()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedTransport<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedTransport<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
    use tokio::io::AsyncReadExt;

    struct Fake(std::io::Cursor<Vec<u8>>);
    impl AsyncRead for Fake {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let mut tmp = vec![0u8; buf.remaining()];
            let n = std::io::Read::read(&mut self.0, &mut tmp)?;
            buf.put_slice(&tmp[..n]);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn prefix_comes_first_then_the_inner_stream() {
        let mut t =
            PrefixedTransport::new(b"abc".to_vec(), Fake(std::io::Cursor::new(b"def".to_vec())));
        let mut out = Vec::new();
        t.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }
}
