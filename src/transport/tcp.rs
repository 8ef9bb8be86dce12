//! WiFi TCP: a plain TCP connection with Nagle disabled.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Transport;
use crate::error::{Error, Result};

/// A TCP connection to a device.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
    peer: String,
}

impl TcpTransport {
    /// Connect to `host:port` within `timeout`, with `TCP_NODELAY` set.
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let target = format!("{host}:{port}");
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("connecting to {target}"),
                after: timeout,
            })?
            .map_err(|source| Error::Transport {
                target: target.clone(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| Error::Transport {
                target: target.clone(),
                source,
            })?;
        tracing::debug!(%target, "connected");
        Ok(Self {
            stream,
            peer: target,
        })
    }
}

impl Transport for TcpTransport {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    fn abort(&mut self) {
        if let Err(e) = self.stream.set_zero_linger() {
            tracing::debug!(error = %e, "could not set SO_LINGER 0");
        }
    }
}

impl AsyncRead for TcpTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
