//! `Manifest::parse_lines` (the `begin` stream and `/ota_manifest.txt`
//! format, `<sha256> <size> <path>` lines) on arbitrary bytes.
//!
//! The input up to its first `\n` is the version, the rest the lines. Never
//! panics; whatever parses is a valid manifest whose `manifest_lines` parse
//! back to an equal manifest and are stable (canonical), and whose
//! `to_json` round-trips too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uota::manifest::{manifest_path_cmp, validate_device_path, Manifest};

fuzz_target!(|data: &[u8]| {
    let (version, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => ("1.0.0".into(), data),
    };
    let Ok(m) = Manifest::parse_lines(&version, bytes) else {
        return;
    };
    assert_eq!(m.version, version);
    assert_eq!(m.sig, None);
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

    let lines = m.manifest_lines();
    assert_eq!(
        lines.iter().filter(|&&b| b == b'\n').count(),
        m.files.len(),
        "one line per file"
    );
    let m2 = Manifest::parse_lines(&version, &lines)
        .unwrap_or_else(|e| panic!("manifest_lines output does not parse: {e}"));
    assert_eq!(m2, m, "manifest_lines round trip");
    assert_eq!(m2.manifest_lines(), lines, "manifest_lines is canonical");

    let json = m.to_json();
    let m3 = Manifest::from_json(&json)
        .unwrap_or_else(|e| panic!("to_json output does not parse: {e}\n{json}"));
    assert_eq!(m3, m, "to_json round trip");
});
