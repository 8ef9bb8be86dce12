//! `uota remoteio listen|call`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::fleet::{self, FleetDevice};
use crate::remoteio::{self, Caller, OutputEvent, RemoteIoOptions};

use super::output::Output;
use super::{connect_options, link, project_root, seconds_arg, try_project, Target};

/// RemoteIO commands.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteioCommand {
    /// Stream the device's output (what its app prints) until Ctrl-C;
    /// survives link drops and restarts, and says what was missed.
    Listen {
        #[command(flatten)]
        target: Target,
        /// Seconds without a frame (not even a keepalive) before the link is
        /// declared dead and reopened.
        #[arg(long, default_value_t = 10.0)]
        outage: f64,
    },
    /// Call a handler the app registered (`@remoteio.on("NAME")`) with
    /// keyword arguments k=v (a value is JSON when it parses as JSON, else a
    /// string); built-ins: ping, uptime_ms, free_mem, version, info.
    Call {
        #[command(flatten)]
        target: Target,
        /// The handler.
        name: String,
        /// Its arguments, k=v.
        args: Vec<String>,
        /// Seconds the call has, resends after link drops included.
        #[arg(long, default_value_t = 30.0)]
        call_timeout: f64,
        /// Call every device of the fleet inventory (config/fleet.json); one result per device.
        #[arg(long)]
        all: bool,
        /// With --all: which devices (tag:T, id:I, name:GLOB or GLOB).
        #[arg(long, requires = "all")]
        select: Option<String>,
    },
}

/// `k=v` arguments as JSON keyword arguments.
pub(crate) fn parse_args(args: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Error::InvalidArgument(format!(
                "argument {a:?}: give NAME=VALUE (state=true, n=3, msg=hello)"
            )));
        };
        if k.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "argument {a:?} has no name"
            )));
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

pub(crate) async fn run(cmd: RemoteioCommand, out: &Output) -> Result<i32> {
    match cmd {
        RemoteioCommand::Listen { target, outage } => {
            let project = try_project(&project_root(&target.project))?;
            let connect = connect_options(&target, project.as_ref())?;
            let link = link(&target, &project)?;
            let opts = RemoteIoOptions {
                outage_after: seconds_arg("--outage", outage, false)?,
                micro_ota_port: project.as_ref().map_or(2019, |p| p.config.remoteio_port),
                ..RemoteIoOptions::default()
            };
            let json = out.is_json();
            let mut on_event = |ev: &OutputEvent| print_event(ev, json);
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            remoteio::listen(&link, &connect, &opts, &mut on_event, stop).await?;
            Ok(0)
        }
        RemoteioCommand::Call {
            target,
            name,
            args,
            call_timeout,
            all,
            select,
        } => {
            let args = parse_args(&args)?;
            let root = project_root(&target.project);
            let project = try_project(&root)?;
            let connect = connect_options(&target, project.as_ref())?;
            let opts = RemoteIoOptions {
                call_timeout: seconds_arg("--call-timeout", call_timeout, false)?,
                micro_ota_port: project.as_ref().map_or(2019, |p| p.config.remoteio_port),
                ..RemoteIoOptions::default()
            };
            if !all {
                let mut caller = Caller::new(link(&target, &project)?, connect, opts);
                let reply = caller.call(&name, args).await;
                caller.close().await;
                let reply = reply?;
                if out.is_json() {
                    out.document(&json!({"ok": true, "result": reply.value, "boot": reply.boot, "duplicate": reply.duplicate, "attempts": reply.attempts}));
                } else {
                    out.line(&reply.value.to_string());
                }
                return Ok(0);
            }
            let devices = super::fleet::fleet_devices(&root, &None, None, &select).await?;
            // Every device at once, as before.
            let all = devices.len();
            let results: Vec<(FleetDevice, Result<remoteio::CallReply>)> =
                fleet::each(devices, all, |d| {
                    let (connect, opts, name, args) =
                        (connect.clone(), opts.clone(), name.clone(), args.clone());
                    async move {
                        let mut caller = Caller::new(d.link(), connect, opts);
                        let r = caller.call(&name, args).await;
                        caller.close().await;
                        (d, r)
                    }
                })
                .await;
            let failed = results.iter().filter(|(_, r)| r.is_err()).count();
            if out.is_json() {
                let devices: Vec<Value> = results
                    .iter()
                    .map(|(d, r)| match r {
                        Ok(reply) => json!({"name": d.name, "address": d.address(), "ok": true, "result": reply.value, "boot": reply.boot}),
                        Err(e) => json!({"name": d.name, "address": d.address(), "ok": false, "error": {"kind": format!("{:?}", e.kind()), "message": e.to_string()}}),
                    })
                    .collect();
                out.document(&json!({"ok": failed == 0, "devices": devices}));
            } else {
                for (d, r) in &results {
                    match r {
                        Ok(reply) => out.line(&format!("{}: {}", d.name, reply.value)),
                        Err(e) => out.line(&format!("{}: error: {e}", d.name)),
                    }
                }
            }
            Ok(if failed == 0 {
                0
            } else {
                super::fleet::EXIT_DEVICES_FAILED
            })
        }
    }
}

fn print_event(ev: &OutputEvent, json: bool) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let res = if json {
        writeln!(o, "{}", ev.to_json())
    } else {
        match ev {
            OutputEvent::Line { text, .. } => write!(o, "{text}"),
            OutputEvent::Gap { missed } => {
                eprintln!("[remoteio: {missed} lines missed (the device's buffer dropped them)]");
                Ok(())
            }
            OutputEvent::Restarted { boot } => {
                eprintln!("[remoteio: the device restarted (boot {boot}); what it printed just before is lost]");
                Ok(())
            }
            OutputEvent::LinkDown { reason } => {
                eprintln!("[remoteio: link lost ({reason}); reconnecting]");
                Ok(())
            }
        }
    };
    if res.and_then(|()| o.flush()).is_err() {
        std::process::exit(0); // the reader went away (`| head`)
    }
}
