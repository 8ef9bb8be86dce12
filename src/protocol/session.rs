//! Binding an authenticated session's state-changing requests (sans-IO).
//!
//! After `auth`, both sides hold a session key derived from the secret the
//! host proved, the hello nonce and the device id
//! ([`crate::auth::session_key`]). Every request that changes the device
//! ([`Request::changes_state`]) then carries a sequence number and a MAC:
//!
//! ```text
//! body   = the request's JSON object with "seq": n   (n = 1, 2, 3, … per connection)
//! sealed = body without its closing "}" + ',"seal":"<hex HMAC-SHA256(session key, body)>"}'
//! ```
//!
//! The device strips the fixed-size `,"seal":"…"}` tail, recomputes the MAC
//! over the rest (with `}` put back) and requires `seq` to be exactly one more
//! than the last bound request it accepted. Someone on the path can therefore
//! neither inject a request, nor replay one, nor reorder or drop one without
//! the next being refused. Read-only requests (`info`, `ls`, `get`,
//! `manifest`, `staged`, `ping`) stay unbound (docs/security.md).

use crate::auth::HmacSha256;
use crate::protocol::Request;

/// The sealed tail's opening: `,"seal":"` (a field name no request uses).
const TAIL_START: &[u8] = b",\"seal\":\"";

/// Length of the sealed tail `,"seal":"<64 hex>"}`.
pub const MAC_TAIL_LEN: usize = 9 + 64 + 2;

/// The host's side of a bound session: the key and the next sequence number.
#[derive(Clone)]
pub struct SessionBinding {
    key: [u8; 32],
    seq: u64,
}

impl std::fmt::Debug for SessionBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBinding")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl SessionBinding {
    /// A binding keyed with `key` ([`crate::auth::session_key`]); no request sealed yet.
    pub fn new(key: [u8; 32]) -> Self {
        SessionBinding { key, seq: 0 }
    }

    /// The sequence number of the last sealed request (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The JSON payload to send for `req`: sealed when it changes state,
    /// plain otherwise.
    pub fn encode(&mut self, req: &Request) -> Vec<u8> {
        if !req.changes_state() {
            return req.to_json();
        }
        self.seq += 1;
        seal(&self.key, self.seq, req)
    }
}

/// Seal `req` with sequence number `seq` under `key` (see the module docs).
pub fn seal(key: &[u8; 32], seq: u64, req: &Request) -> Vec<u8> {
    let value = serde_json::to_value(req).expect("requests always serialize");
    seal_value(key, seq, value)
}

/// Seal a request given as a JSON object (tools and tests that write
/// requests by hand); `seq` is added to it. A value that is not an object
/// is returned as its JSON text, unsealed.
pub fn seal_value(key: &[u8; 32], seq: u64, mut value: serde_json::Value) -> Vec<u8> {
    let serde_json::Value::Object(map) = &mut value else {
        return value.to_string().into_bytes();
    };
    map.insert("seq".into(), seq.into());
    seal_body(key, &serde_json::to_vec(&value).expect("json"))
}

/// Seal a request's JSON text that already carries its `"seq"` (and ends
/// with `}`): the body as it is, plus the MAC tail.
pub fn seal_body(key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new(key);
    mac.update(body);
    let tag = hex::encode(mac.finalize());
    let mut out = Vec::with_capacity(body.len() + MAC_TAIL_LEN);
    out.extend_from_slice(body.strip_suffix(b"}").unwrap_or(body));
    out.extend_from_slice(TAIL_START);
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Check a sealed payload as a device does: `Some(seq)` when the MAC over the
/// body verifies under `key` (the caller then checks the sequence number).
pub fn open(key: &[u8; 32], payload: &[u8]) -> Option<u64> {
    if payload.len() < MAC_TAIL_LEN + 2 {
        return None;
    }
    let split = payload.len() - MAC_TAIL_LEN;
    let (head, tail) = payload.split_at(split);
    if !tail.starts_with(TAIL_START) || !tail.ends_with(b"\"}") {
        return None;
    }
    let mut body = head.to_vec();
    body.push(b'}');
    let mut mac = HmacSha256::new(key);
    mac.update(&body);
    let want = hex::encode(mac.finalize());
    if !crate::auth::constant_time_eq(want.as_bytes(), &tail[9..9 + 64]) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v.get("seq")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changing_requests_are_sealed_in_sequence() {
        let key = [3u8; 32];
        let mut b = SessionBinding::new(key);
        assert_eq!(b.encode(&Request::Ping), Request::Ping.to_json());
        let rm = Request::Rm {
            path: "app/x.py".into(),
        };
        let first = b.encode(&rm);
        let second = b.encode(&Request::Wipe);
        assert_eq!(open(&key, &first), Some(1));
        assert_eq!(open(&key, &second), Some(2));
        let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["op"], "rm");
        assert_eq!(v["path"], "app/x.py");
        assert_eq!(v["seal"].as_str().unwrap().len(), 64);
        // A request with its own "mac" field (rekey) keeps it.
        let rekey = Request::Rekey {
            key: "00".into(),
            mac: "ab".into(),
        };
        let sealed = b.encode(&rekey);
        let v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(v["mac"], "ab");
        assert_eq!(open(&key, &sealed), Some(3));
    }

    #[test]
    fn altered_or_foreign_requests_do_not_open() {
        let key = [3u8; 32];
        let sealed = seal(&key, 1, &Request::Rm { path: "a".into() });
        assert_eq!(open(&[4u8; 32], &sealed), None);
        let text = String::from_utf8(sealed.clone()).unwrap();
        let altered = text.replace("\"a\"", "\"b\"");
        assert_eq!(open(&key, altered.as_bytes()), None);
        assert_eq!(open(&key, &Request::Wipe.to_json()), None);
        assert_eq!(open(&key, b""), None);
    }
}
