//! The micro-ota side of the host (`uota::protocol::micro_ota`) on arbitrary
//! input: reply lines from a device, and the line and container builders fed
//! with arbitrary paths and versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uota::manifest::{validate_device_path, FileEntry};
use uota::protocol::micro_ota::{
    container_len, file_line, parse_reply, parse_reply_to, OtasEncoder, Reply,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // Reply lines: success only for the few words micro-ota answers with.
    match parse_reply(&text) {
        Ok(r) => {
            let word = text.trim();
            let want = match word {
                "ok" | "UOTA_OK" => Reply::Ok,
                "ready" => Reply::Ready,
                "pong" => Reply::Pong,
                "aborted" => Reply::Aborted,
                other => panic!("{other:?} parsed as {r:?}"),
            };
            assert_eq!(r, want);
        }
        Err(e) => {
            // Error messages quote at most 200 bytes of the line (Debug-escaped:
            // up to 10 characters each, `\u{10ffff}`), whatever its length.
            if let uota::Error::Protocol(m) = &e {
                assert!(
                    m.len() <= 128 + 10 * 200,
                    "unbounded message of {} bytes",
                    m.len()
                );
            }
            let _ = e.to_string();
            let _ = e.kind();
        }
    }
    let (op, line) = text.split_once('\n').unwrap_or(("stream_ota", &text));
    let _ = parse_reply_to(op, line);

    // Builders: the input as a path and a version.
    let path = text.lines().next().unwrap_or("");
    let entry = FileEntry::from_bytes(path, data);
    match file_line(&entry) {
        Ok(l) => {
            validate_device_path(path).expect("file_line takes only valid paths");
            assert!(!path.contains(';'));
            assert_eq!(l.matches('\n').count(), 1);
            assert!(l.ends_with('\n'));
        }
        Err(_) => {
            assert!(validate_device_path(path).is_err() || path.contains(';'));
        }
    }
    let mut enc = OtasEncoder::new(None);
    if let Ok(head) = enc.header(&text, data.len() as u16) {
        assert_eq!(head.len(), 4 + 2 + text.len() + 2);
        if let Ok(fh) = enc.file_header(&entry) {
            assert_eq!(fh.len(), 2 + path.len() + 4 + 32);
            enc.data(data);
        }
    }
    assert_eq!(enc.trailer(), [0u8; 32]);
    if let Ok(n) = container_len(&text, std::slice::from_ref(&entry)) {
        assert_eq!(
            n,
            (4 + 2 + text.len() + 2 + 32 + 2 + path.len() + 4 + 32 + data.len()) as u64
        );
    }
});
