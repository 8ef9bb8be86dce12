//! RemoteIO requests on a connection: calls and the output stream
//! (docs/remoteio.md). The `remoteio` module drives them across link drops.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Device;
use crate::error::{Error, Result};
use crate::protocol::{FrameType, Request};

/// What a RemoteIO call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReply {
    /// The handler's result.
    pub value: Value,
    /// The device's boot count when it answered: a different one than an
    /// earlier reply's means it restarted in between.
    pub boot: u64,
    /// The device had run this call already (a resend after a link drop)
    /// and answered with that run's result.
    pub duplicate: bool,
    /// Times the call was sent.
    pub attempts: u32,
}

impl Device {
    /// Run the device app's handler `name` with `args` as call `id`. A call
    /// resent with the same id (after a link drop) runs once: the device
    /// answers it with the first run's result (`duplicate`).
    ///
    /// # Errors
    ///
    /// [`Error::Device`] with code `unknown_handler`, `call_failed` (the
    /// message says the exception's type and text), `call_timeout` or
    /// `bad_result`; link, timeout and authentication errors.
    pub async fn call(
        &mut self,
        id: &str,
        name: &str,
        args: Map<String, Value>,
    ) -> Result<CallReply> {
        let res = self
            .request(&Request::Call {
                id: id.to_string(),
                name: name.to_string(),
                args,
            })
            .await?;
        Ok(CallReply {
            value: res.fields.get("r").cloned().unwrap_or(Value::Null),
            boot: res.fields.get("boot").and_then(Value::as_u64).unwrap_or(0),
            duplicate: res
                .fields
                .get("dup")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attempts: 1,
        })
    }

    /// Ask for the device's output from sequence number `from` of boot
    /// `boot` (another boot: from the start of its buffer), with a
    /// keepalive every `keepalive` while there is none; returns the device's
    /// boot count. The connection then carries only the output stream
    /// ([`Device::next_output`]).
    ///
    /// # Errors
    ///
    /// Link, timeout and authentication errors; [`Error::Device`]
    /// `unknown_op` from a runtime without RemoteIO.
    pub async fn listen(
        &mut self,
        from: u64,
        boot: Option<u64>,
        keepalive: Duration,
    ) -> Result<u64> {
        let res = self
            .request(&Request::Listen {
                from,
                boot,
                keepalive_ms: keepalive.as_millis().clamp(100, 60_000) as u64,
            })
            .await?;
        Ok(res.fields.get("boot").and_then(Value::as_u64).unwrap_or(0))
    }

    /// The next frame of the output stream (its JSON payload), waiting at
    /// most `wait`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `wait`; link errors; [`Error::Protocol`]
    /// for a frame that is not output.
    pub async fn next_output(&mut self, wait: Duration) -> Result<Vec<u8>> {
        let f = self.read_frame("listen", wait).await?;
        match f.kind {
            FrameType::Data => Ok(f.payload),
            other => Err(Error::Protocol(format!(
                "expected output (a DATA frame), got a {other:?} frame"
            ))),
        }
    }
}
