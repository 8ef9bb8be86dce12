//! The device's hello reply (`Hello::parse`) and RES payloads
//! (`Response::parse`) on arbitrary input.
//!
//! Never panics. A parsed hello advertises a max frame of at least 256
//! bytes and round-trips through its JSON; a parsed reply was a JSON object
//! with `"ok": true` and keeps every other field; an error reply maps to a
//! typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uota::protocol::{Hello, Response};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Hello::parse(&text) {
        Ok(Some(h)) => {
            assert!(text.starts_with("uota "));
            assert!(h.max_frame >= 256);
            let json = serde_json::to_string(&h).expect("a hello serializes");
            let again = Hello::parse(&format!("uota 1 {json}"))
                .expect("a re-encoded hello parses")
                .expect("and is a hello");
            assert_eq!(again, h);
            let _ = h.has_cap("deflate");
        }
        Ok(None) => assert!(!text.starts_with("uota ")),
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // Replies: the first line names the op, the rest is the payload; the
    // whole input is also tried as a payload.
    let (op, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => ("ping".into(), data),
    };
    for (op, payload) in [(op.as_ref(), payload), ("info", data)] {
        match Response::parse(op, payload) {
            Ok(r) => {
                let v: serde_json::Value =
                    serde_json::from_slice(payload).expect("a parsed reply is JSON");
                let obj = v.as_object().expect("a parsed reply is an object");
                assert_eq!(obj.get("ok"), Some(&serde_json::Value::Bool(true)));
                assert!(!r.fields.contains_key("ok"));
                assert_eq!(r.fields.len(), obj.len() - 1);
                let _ = r.str_field("version");
                let _ = r.bool_field("resumed");
                let _ = r.u64_field("size");
                let _ = r.clone().into_typed::<Hello>(op);
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.kind();
            }
        }
    }
});
