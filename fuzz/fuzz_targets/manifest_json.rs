//! `Manifest::from_json` (micro-ota's push-manifest JSON) on arbitrary input.
//!
//! Never panics; whatever parses is a valid manifest (valid paths, sorted,
//! each path once) that round-trips: `to_json` parses back to an equal
//! manifest and is stable, and its manifest lines parse back to the same
//! files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uota::manifest::{manifest_path_cmp, validate_device_path, Manifest};

fn check(json: &str) {
    let Ok(m) = Manifest::from_json(json) else {
        return;
    };
    for e in &m.files {
        validate_device_path(&e.path).expect("a parsed path is valid");
    }
    for w in m.files.windows(2) {
        assert_eq!(
            manifest_path_cmp(&w[0].path, &w[1].path),
            std::cmp::Ordering::Less,
            "files sorted by path + ':', each path once"
        );
    }
    if let Some(sig) = &m.sig {
        assert!(sig.len() == 64 && sig.bytes().all(|b| b"0123456789abcdef".contains(&b)));
    }

    let json2 = m.to_json();
    let m2 = Manifest::from_json(&json2)
        .unwrap_or_else(|e| panic!("to_json output does not parse: {e}\n{json2}"));
    assert_eq!(m2, m, "to_json round trip");
    assert_eq!(m2.to_json(), json2, "to_json is stable");

    let lines = m.manifest_lines();
    let m3 = Manifest::parse_lines(&m.version, &lines)
        .unwrap_or_else(|e| panic!("manifest_lines output does not parse: {e}"));
    assert_eq!(m3.files, m.files, "manifest_lines round trip");
    assert_eq!(m3.version, m.version);

    // The rest of the API must cope with whatever parsed.
    let _ = m.signing_payload();
    let _ = m.total_size();
    assert!(m.diff(&m).is_empty());
    for e in &m.files {
        assert_eq!(m.get(&e.path), Some(e));
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(s) => check(s),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
