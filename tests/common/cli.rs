//! Running the built `uota` command from tests (feature `cli`).

use std::process::{Command, Output};

/// Run `uota ARGS` to its end.
pub fn uota(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uota"))
        .args(args)
        .output()
        .expect("run uota")
}

/// What it printed, stdout then stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Its stdout as JSON (the test fails, showing the output, when it is not).
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// Its stdout as JSON, after checking that it exited 0.
pub fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(out)
    );
    json(out)
}
