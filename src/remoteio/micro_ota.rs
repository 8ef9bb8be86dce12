//! RemoteIO with devices that run micro-ota's runtime: JSON lines on its
//! RemoteIO port (2019), no authentication, no resend (its ids are a host's
//! counters, so a resent call would run again: a call is sent once).

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{DeviceErrorCode, Error, Result};
use crate::protocol::line::LineDecoder;
use crate::transport::tcp::TcpTransport;

/// The line of a call (micro-ota's format).
pub fn call_line(id: u64, name: &str, args: &Map<String, Value>) -> String {
    json!({"t": "call", "id": id, "name": name, "args": args}).to_string()
}

/// What a reply line says about call `id`: `None` for a line about
/// something else (printed output, another call).
///
/// # Errors
///
/// [`Error::Device`] `call_failed` (or `unknown_handler`) for an error reply.
pub fn parse_reply(line: &str, id: u64) -> Option<Result<Value>> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return None;
    }
    match v.get("t").and_then(Value::as_str) {
        Some("resp") => Some(Ok(v.get("r").cloned().unwrap_or(Value::Null))),
        Some("err") => {
            let msg = v.get("e").and_then(Value::as_str).unwrap_or("").to_string();
            let code = if msg.starts_with("unknown handler") {
                DeviceErrorCode::UnknownHandler
            } else {
                DeviceErrorCode::CallFailed
            };
            Some(Err(Error::Device {
                op: "call".into(),
                code,
                message: msg,
            }))
        }
        _ => None,
    }
}

/// Call `name` on the micro-ota RemoteIO server at `host:port`, waiting at
/// most `wait` for the answer.
///
/// # Errors
///
/// Link errors, [`Error::Timeout`], and those of [`parse_reply`].
pub async fn call(
    host: &str,
    port: u16,
    name: &str,
    args: &Map<String, Value>,
    wait: Duration,
) -> Result<Value> {
    let target = format!("{host}:{port}");
    let io_err = |source| Error::Transport {
        target: target.clone(),
        source,
    };
    let work = async {
        let mut io = TcpTransport::connect(host, port, wait).await?;
        let id = 1;
        let mut line = call_line(id, name, args);
        line.push('\n');
        io.write_all(line.as_bytes()).await.map_err(io_err)?;
        io.flush().await.map_err(io_err)?;
        let mut decoder = LineDecoder::new(crate::protocol::line::DEFAULT_MAX_LINE);
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            while let Some(l) = decoder.decode(&mut buf)? {
                if let Some(r) = parse_reply(&l, id) {
                    return r;
                }
            }
            let n = io.read(&mut chunk).await.map_err(io_err)?;
            if n == 0 {
                return Err(Error::ConnectionClosed {
                    during: format!("the call {name} (micro-ota RemoteIO)"),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(wait, work)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("the call {name} (micro-ota RemoteIO at {target})"),
            after: wait,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_replies() {
        let mut args = Map::new();
        args.insert("state".into(), json!(true));
        let l = call_line(7, "set_led", &args);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(
            v,
            json!({"t": "call", "id": 7, "name": "set_led", "args": {"state": true}})
        );
        assert_eq!(
            parse_reply(r#"{"t":"resp","id":7,"r":42}"#, 7)
                .unwrap()
                .unwrap(),
            42
        );
        assert!(parse_reply(r#"{"t":"print","d":"hi"}"#, 7).is_none());
        assert!(parse_reply(r#"{"t":"resp","id":8,"r":1}"#, 7).is_none());
        let e = parse_reply(r#"{"t":"err","id":7,"e":"unknown handler: x"}"#, 7)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Device {
                    code: DeviceErrorCode::UnknownHandler,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
