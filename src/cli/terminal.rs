//! `uota terminal`: the board's REPL in this terminal, until Ctrl-].
//!
//! Keys go to the board as typed (the local terminal is put in raw mode, so
//! Ctrl-C and Ctrl-D reach the board); the board's output is written as it
//! comes. Works inside tmux and screen: nothing but bytes crosses.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::board::{resolve, Port};
use super::output::Output;
use crate::error::{Error, Result};
use crate::transport::serial::SerialTransport;

/// Ctrl-]: leaves the terminal (as in telnet and miniterm).
const EXIT_KEY: u8 = 0x1d;

pub(crate) async fn run(args: Port, out: &Output) -> Result<()> {
    let (link, _) = resolve(&args)?;
    let mut port = SerialTransport::open(&link.path, link.baud, Duration::from_secs(5)).await?;
    eprintln!(
        "uota terminal on {} at {} baud; Ctrl-] leaves\r",
        link.path, link.baud
    );
    let raw = RawStdin::enter()?;
    let result = pump(&mut port).await;
    drop(raw);
    eprintln!();
    result?;
    out.value("terminal", "closed");
    Ok(())
}

async fn pump(port: &mut SerialTransport) -> Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut keys = [0u8; 256];
    let mut board = [0u8; 4096];
    let peer = port.path().to_string();
    let link_err = |source| Error::Transport {
        target: peer.clone(),
        source,
    };
    loop {
        tokio::select! {
            n = stdin.read(&mut keys) => {
                let n = n.map_err(|e| Error::io("<stdin>", e))?;
                if n == 0 {
                    return Ok(());
                }
                let typed = &keys[..n];
                let (send, leave) = match typed.iter().position(|&b| b == EXIT_KEY) {
                    Some(i) => (&typed[..i], true),
                    None => (typed, false),
                };
                port.write_all(send).await.map_err(link_err)?;
                if leave {
                    return Ok(());
                }
            }
            n = port.read(&mut board) => {
                let n = n.map_err(link_err)?;
                if n == 0 {
                    return Err(Error::ConnectionClosed { during: "the terminal session".into() });
                }
                stdout.write_all(&board[..n]).await.map_err(|e| Error::io("<stdout>", e))?;
                stdout.flush().await.map_err(|e| Error::io("<stdout>", e))?;
            }
        }
    }
}

/// The local terminal in raw mode while it lives (a no-op when stdin is not a terminal).
struct RawStdin {
    #[cfg(unix)]
    saved: Option<libc::termios>,
}

impl RawStdin {
    #[cfg(unix)]
    fn enter() -> Result<RawStdin> {
        // SAFETY: tcgetattr/cfmakeraw/tcsetattr on fd 0 with a termios we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return Ok(RawStdin { saved: None });
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Err(Error::io("<stdin>", std::io::Error::last_os_error()));
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Err(Error::io("<stdin>", std::io::Error::last_os_error()));
            }
            Ok(RawStdin { saved: Some(saved) })
        }
    }

    #[cfg(not(unix))]
    fn enter() -> Result<RawStdin> {
        Ok(RawStdin {})
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            // SAFETY: restores the attributes read in enter().
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}
