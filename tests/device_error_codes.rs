//! Every error code the device runtime can put in a reply is one the host
//! knows by name (`uota::DeviceErrorCode`), so no reply is matched as a string.

use std::path::Path;

use uota::DeviceErrorCode;

/// The codes raised as `PushError("code", …)` in the runtime's modules.
fn codes_in(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            codes_in(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("PushError(") {
            let rest = &text[i + "PushError(".len()..];
            let rest = rest.trim_start();
            let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue; // a code held in a variable
            };
            let Some(end) = rest[1..].find(quote) else {
                continue;
            };
            found.push((rest[1..1 + end].to_string(), path.display().to_string()));
        }
    }
}

#[test]
fn every_code_the_runtime_raises_is_typed_on_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    codes_in(&root.join("device/lib/uota"), &mut found);
    assert!(
        found.len() > 20,
        "the scan found too few codes to be working: {found:?}"
    );
    let unknown: Vec<_> = found
        .iter()
        .filter(|(code, _)| matches!(DeviceErrorCode::parse(code), DeviceErrorCode::Other(_)))
        .collect();
    assert!(
        unknown.is_empty(),
        "codes the host does not name: {unknown:?}"
    );
}
