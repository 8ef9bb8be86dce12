//! RemoteIO with devices that run micro-ota's runtime: JSON lines on its
//! RemoteIO port (2019), no authentication, no resend (its ids are a host's
//! counters, so a resent call would run again: a call is sent once). A
//! listener reads its `print` lines; micro-ota keeps no output while nobody
//! listens and numbers nothing, so a reconnected listener sees only what is
//! printed from then on.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::OutputEvent;
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

/// The line a uota host sends first to listen: micro-ota's runtime ignores
/// it (it streams to any client), a uota device in legacy mode starts
/// streaming on it.
pub const LISTEN_LINE: &str = r#"{"t":"listen"}"#;

/// What one line from micro-ota's RemoteIO means to a listener: printed
/// text (numbered from `next_seq`, which it advances), entries the device
/// dropped (a uota device's `{"t":"gap"}`), or `None` for anything else.
///
/// # Errors
///
/// [`Error::Auth`] when the device refuses to stream (a uota device with a
/// signing key, not in legacy mode).
pub fn parse_output(line: &str, next_seq: &mut u64) -> Option<Result<OutputEvent>> {
    let v: Value = serde_json::from_str(line).ok()?;
    match v.get("t").and_then(Value::as_str)? {
        "print" => {
            let text = v.get("d").and_then(Value::as_str)?.to_string();
            let seq = *next_seq;
            *next_seq += 1;
            Some(Ok(OutputEvent::Line { seq, text }))
        }
        "gap" => {
            let missed = v.get("n").and_then(Value::as_u64)?;
            *next_seq += missed;
            Some(Ok(OutputEvent::Gap { missed }))
        }
        "err" if v.get("id").is_none_or(Value::is_null) => {
            let msg = v.get("e").and_then(Value::as_str).unwrap_or("refused");
            Some(Err(Error::Auth(format!(
                "the device refuses to stream its output: {msg}"
            ))))
        }
        _ => None,
    }
}

/// Listen to the micro-ota RemoteIO server at `host:port` (connecting
/// within `connect_timeout`), passing each event to `on_event`, until the
/// link drops (an error: the caller reconnects).
///
/// # Errors
///
/// Link errors ([`Error::ConnectionClosed`] when the device closes), and
/// those of [`parse_output`].
pub async fn listen_session(
    host: &str,
    port: u16,
    connect_timeout: Duration,
    next_seq: &mut u64,
    on_event: &mut (dyn FnMut(&OutputEvent) + Send),
) -> Result<()> {
    let target = format!("{host}:{port}");
    let io_err = |source| Error::Transport {
        target: target.clone(),
        source,
    };
    let mut io = TcpTransport::connect(host, port, connect_timeout).await?;
    io.write_all(format!("{LISTEN_LINE}\n").as_bytes())
        .await
        .map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    let mut decoder = LineDecoder::new(crate::protocol::line::DEFAULT_MAX_LINE);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        while let Some(line) = decoder.decode(&mut buf)? {
            if let Some(ev) = parse_output(&line, next_seq) {
                on_event(&ev?);
            }
        }
        let n = io.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(Error::ConnectionClosed {
                during: format!("listening to {target} (micro-ota RemoteIO)"),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
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

    #[test]
    fn output_lines_are_numbered_and_gaps_counted() {
        let mut next = 0;
        let ev = |l: &str, next: &mut u64| parse_output(l, next).map(|r| r.unwrap());
        assert_eq!(
            ev(r#"{"t":"print","d":"a\n"}"#, &mut next),
            Some(OutputEvent::Line {
                seq: 0,
                text: "a\n".into()
            })
        );
        assert_eq!(
            ev(r#"{"t":"gap","n":3}"#, &mut next),
            Some(OutputEvent::Gap { missed: 3 })
        );
        assert_eq!(
            ev(r#"{"t":"print","d":"b"}"#, &mut next),
            Some(OutputEvent::Line {
                seq: 4,
                text: "b".into()
            })
        );
        assert_eq!(ev(r#"{"t":"resp","id":1,"r":2}"#, &mut next), None);
        assert_eq!(ev("not json", &mut next), None);
        let refused = parse_output(r#"{"t":"err","id":null,"e":"auth_required"}"#, &mut next);
        assert!(matches!(refused, Some(Err(Error::Auth(_)))), "{refused:?}");
    }
}
