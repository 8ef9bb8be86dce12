//! Commands against devices that run micro-ota's runtime (line protocol).

use super::{Device, DirEntry};
use crate::error::{Error, Result};
use crate::protocol::{line, microota};

impl Device {
    /// micro-ota's login: the plaintext password as the first line, when one is set.
    pub(super) async fn legacy_login(&mut self) -> Result<()> {
        let Some(password) = self.options().password.clone() else {
            return Ok(());
        };
        // Only reached when the caller chose micro-ota's protocol explicitly.
        tracing::warn!(target = %self.target(), "sending the password in plaintext, as micro-ota's protocol does");
        self.send(&line::encode(password.expose())).await?;
        self.flush().await?;
        match self.read_line("micro-ota login").await?.as_str() {
            "denied" => {
                self.mark_closed();
                Err(Error::Auth("the device denied the password".into()))
            }
            // `ok` from a password-protected device; `unknown` from one without.
            _ => Ok(()),
        }
    }

    async fn legacy_send_line(&mut self, text: &str) -> Result<()> {
        self.send(&line::encode(text)).await?;
        self.flush().await
    }

    /// Send a line command and expect one exact reply line.
    pub(super) async fn legacy_command(&mut self, cmd: &str, expect: &str) -> Result<()> {
        self.legacy_send_line(cmd).await?;
        let reply = self.read_line(cmd).await?;
        if reply == expect {
            return Ok(());
        }
        microota::parse_reply(&reply)?;
        Err(Error::Protocol(format!(
            "unexpected reply to {cmd:?}: {reply:?}"
        )))
    }

    pub(super) async fn legacy_version(&mut self) -> Result<String> {
        self.legacy_send_line("version").await?;
        let reply = self.read_line("version").await?;
        let value: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| Error::Protocol(format!("malformed version reply {reply:?}: {e}")))?;
        Ok(value
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    pub(super) async fn legacy_ls(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        self.legacy_send_line(&format!("ls {path}")).await?;
        let mut entries = Vec::new();
        loop {
            let l = self.read_line("ls").await?;
            if l.is_empty() {
                return Ok(entries);
            }
            if entries.is_empty() && l.starts_with("error") {
                microota::parse_reply(&l)?;
            }
            let (name, is_dir) = match l.strip_suffix('/') {
                Some(n) => (n.to_string(), true),
                None => (l, false),
            };
            entries.push(DirEntry {
                name,
                is_dir,
                size: 0,
            });
        }
    }

    /// Ask for a file; returns the size micro-ota announces before its bytes.
    pub(super) async fn legacy_get_size(&mut self, path: &str) -> Result<u64> {
        self.legacy_send_line(&format!("get {path}")).await?;
        let head = self.read_line("get").await?;
        match head.parse() {
            Ok(n) => Ok(n),
            Err(_) => {
                microota::parse_reply(&head)?;
                Err(Error::Protocol(format!(
                    "malformed get reply {:?}",
                    crate::text::escape_controls(&head)
                )))
            }
        }
    }
}
