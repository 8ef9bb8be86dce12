//! Time RemoteIO calls over one connection (`uota::remoteio::Caller`) and
//! print what they took as one JSON line: the round trip of each call without
//! the process start and the connection (authentication included) that
//! `uota remoteio call` pays every time. The benchmark `benches/remoteio.py`
//! runs it.
//!
//! ```text
//! cargo run --release --example remoteio_calls -- LINK [--calls N] [--warmup N]
//!     [--name HANDLER] [--args JSON] [--password PW] [--key KEY]
//! ```
//!
//! `LINK` is `tcp://HOST:PORT` or `serial:///dev/pts/N?baud=B`. The default
//! call is `add` with `{"a": i, "b": 1}` (its result is checked: `i + 1`);
//! `--name`/`--args` call another handler with fixed arguments.
//!
//! Output: `{"calls": N, "connect_ms": …, "p50_ms": …, "p90_ms": …,
//! "p99_ms": …, "max_ms": …, "mean_ms": …, "calls_per_s": …, "resent": …}`
//! (`connect_ms` is the first call, which opens the connection; the
//! `--warmup` calls after it are not counted).

use std::time::Instant;

use serde_json::{json, Map, Value};
use uota::auth::{Password, SigningKey};
use uota::device::{ConnectOptions, Link};
use uota::remoteio::{Caller, RemoteIoOptions};

fn usage(why: &str) -> ! {
    eprintln!("remoteio_calls: {why}\nusage: remoteio_calls LINK [--calls N] [--warmup N] [--name H] [--args JSON] [--password PW] [--key KEY]");
    std::process::exit(2)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> uota::Result<()> {
    let mut link: Option<Link> = None;
    let (mut calls, mut warmup) = (1000usize, 20usize);
    let mut name: Option<String> = None;
    let mut fixed: Option<Map<String, Value>> = None;
    let mut connect = ConnectOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--calls" => calls = value().parse().unwrap_or_else(|_| usage("--calls N")),
            "--warmup" => warmup = value().parse().unwrap_or_else(|_| usage("--warmup N")),
            "--name" => name = Some(value()),
            "--args" => {
                fixed = Some(
                    serde_json::from_str::<Value>(&value())
                        .ok()
                        .and_then(|v| v.as_object().cloned())
                        .unwrap_or_else(|| usage("--args takes a JSON object")),
                )
            }
            "--password" => connect.password = Some(Password::new(value())),
            "--key" => connect.signing_key = Some(SigningKey::new(value())),
            _ if link.is_none() && !a.starts_with("--") => link = Some(a.parse()?),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let link = link.unwrap_or_else(|| usage("no LINK"));
    let mut caller = Caller::new(link, connect, RemoteIoOptions::default());
    let mut times = Vec::with_capacity(calls);
    let mut resent = 0u32;
    let mut connect_ms = 0.0;
    for i in 0..(1 + warmup + calls) {
        let (handler, a) = match (&name, &fixed) {
            (Some(n), f) => (n.as_str(), f.clone().unwrap_or_default()),
            (None, _) => (
                "add",
                json!({"a": i, "b": 1})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        };
        let t0 = Instant::now();
        let reply = caller.call(handler, a).await?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if name.is_none() && reply.value != json!(i + 1) {
            eprintln!("call {i}: add returned {} (want {})", reply.value, i + 1);
            std::process::exit(1);
        }
        if i == 0 {
            connect_ms = ms;
        } else if i > warmup {
            times.push(ms);
            resent += u32::from(reply.attempts > 1);
        }
    }
    caller.close().await;
    let total: f64 = times.iter().sum();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "calls": times.len(),
            "connect_ms": connect_ms,
            "p50_ms": percentile(&sorted, 0.50),
            "p90_ms": percentile(&sorted, 0.90),
            "p99_ms": percentile(&sorted, 0.99),
            "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
            "mean_ms": total / times.len().max(1) as f64,
            "calls_per_s": times.len() as f64 / (total / 1e3).max(1e-9),
            "resent": resent,
        })
    );
    Ok(())
}
