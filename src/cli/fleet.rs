//! Fleet commands: `uota list`, `uota full|fast --all`, `uota status`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::config::Project;
use crate::error::{Error, Result};
use crate::fleet::{
    self, Discovered, FleetDevice, FleetEvent, Groups, Inventory, Outcome, Resume, RolloutOptions,
    RolloutPlan, RolloutReport, ScanOptions, Selection, Threshold,
};
use crate::protocol::PushMode;
use crate::text::escape_controls as esc;
use crate::transport::link::DEFAULT_OTA_PORT;

use super::output::Output;
use super::{project_root, seconds_arg, PushArgs, Target};

/// Exit code: some devices failed (the rollout went on).
pub(crate) const EXIT_DEVICES_FAILED: i32 = 10;
/// Exit code: a `--max-failures` threshold stopped the rollout.
pub(crate) const EXIT_STOPPED: i32 = 11;

/// The fleet options of `uota full` and `uota fast`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// Every device of the fleet inventory (config/fleet.json), or of --scan.
    #[arg(long)]
    pub(crate) all: bool,
    /// The fleet inventory (default: config/fleet.json in the project).
    #[arg(long, value_name = "FILE", requires = "all")]
    inventory: Option<PathBuf>,
    /// Roll out to the devices a scan of this range finds instead of the inventory.
    #[arg(long, value_name = "CIDR", requires = "all")]
    scan: Option<String>,
    /// With --scan: scan a range larger than a /16.
    #[arg(long, requires = "scan")]
    force: bool,
    /// Which devices: tag:T, id:I, name:GLOB or GLOB, comma-separated (any matches).
    #[arg(long, requires = "all")]
    select: Option<String>,
    /// Waves, cumulative: `1,10%,100%` is a canary, then up to a tenth, then the rest.
    #[arg(long, requires = "all", default_value = "100%")]
    groups: String,
    /// Devices pushed at once within a wave.
    #[arg(long, requires = "all", default_value_t = 16)]
    concurrency: usize,
    /// Failures tolerated per wave and overall (N or P%); crossing it starts no further device.
    #[arg(long, requires = "all", value_name = "N|P%")]
    max_failures: Option<String>,
    /// After a device commits, wait up to SECONDS for it to confirm the release
    /// (a rollback, a crash loop or the time running out fail the device).
    #[arg(long, requires = "all", value_name = "SECONDS")]
    health_wait: Option<f64>,
    /// Attempts after the first, for link failures only.
    #[arg(long, requires = "all", default_value_t = 2)]
    retries: u32,
    /// Seconds before the first retry (doubling for each further one).
    #[arg(long, requires = "all", default_value_t = 1.0)]
    retry_backoff: f64,
    /// Seconds allowed per device, retries and health wait included.
    #[arg(long, requires = "all", default_value_t = 300.0)]
    device_timeout: f64,
    /// Seconds to pause between waves.
    #[arg(long, requires = "all", default_value_t = 0.0)]
    pause_between: f64,
    /// Continue a stopped or crashed rollout (the newest unfinished one, or ID).
    #[arg(long, requires = "all", num_args = 0..=1, default_missing_value = "", value_name = "ID")]
    resume: Option<String>,
    /// Write the report as a JUnit XML file (a test suite per wave, a test case per device).
    #[arg(long, requires = "all", value_name = "FILE")]
    junit: Option<PathBuf>,
}

/// `uota list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Scan this address range (a.b.c.d/n) for devices instead of listing the inventory.
    #[arg(long, value_name = "CIDR")]
    scan: Option<String>,
    /// The OTA port to probe (default: the project's `port`, else 2018).
    #[arg(long)]
    port: Option<u16>,
    /// Seconds to wait for each address or device.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    /// Addresses probed at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Write what the scan found into the inventory (merged with what it holds).
    #[arg(long, requires = "scan")]
    save: bool,
    /// Scan a range larger than a /16.
    #[arg(long, requires = "scan")]
    force: bool,
    /// The fleet inventory (default: config/fleet.json in the project).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Project folder (default: the current folder).
    #[arg(long)]
    project: Option<PathBuf>,
}

/// `uota status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Every device of the fleet inventory.
    #[arg(long)]
    all: bool,
    /// With --all: which devices (as for rollouts).
    #[arg(long, requires = "all")]
    select: Option<String>,
    /// The fleet inventory (default: config/fleet.json in the project).
    #[arg(long, value_name = "FILE", requires = "all")]
    inventory: Option<PathBuf>,
    /// Devices asked at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn inventory_path(root: &Path, given: &Option<PathBuf>) -> PathBuf {
    given.clone().unwrap_or_else(|| Inventory::path_in(root))
}

fn project_port(root: &Path) -> u16 {
    if root.join("config/ota.json").is_file() {
        if let Ok(p) = Project::load(root) {
            return p.config.port;
        }
    }
    DEFAULT_OTA_PORT
}

async fn scan(
    cidr: &str,
    port: u16,
    timeout: f64,
    concurrency: usize,
    force: bool,
) -> Result<Vec<Discovered>> {
    let opts = ScanOptions {
        port,
        timeout: seconds_arg("--timeout", timeout, true)?.max(Duration::from_millis(10)),
        concurrency,
        force,
        loopback_only: ScanOptions::loopback_only_from_env(),
    };
    fleet::discover::scan(cidr, &opts).await
}

/// `uota list`: the inventory with each device's hello, or a scan.
pub(crate) async fn list(args: ListArgs, out: &Output) -> Result<i32> {
    let root = project_root(&args.project);
    let inv_path = inventory_path(&root, &args.inventory);
    let port = args.port.unwrap_or_else(|| project_port(&root));
    let rows: Vec<(Option<String>, Discovered, Option<String>)> = match &args.scan {
        Some(cidr) => {
            let found = scan(cidr, port, args.timeout, args.concurrency, args.force).await?;
            let known = if inv_path.is_file() {
                Some(Inventory::load(&inv_path)?)
            } else {
                None
            };
            let name_of = |d: &Discovered| {
                known.as_ref().and_then(|inv| {
                    inv.devices
                        .iter()
                        .find(|e| {
                            (e.id.is_some() && e.id == d.id)
                                || (e.host.as_deref() == Some(d.host.as_str())
                                    && e.port.unwrap_or(DEFAULT_OTA_PORT) == d.port)
                        })
                        .map(|e| e.name.clone())
                })
            };
            let mut rows: Vec<_> = found
                .iter()
                .map(|d| (name_of(d), d.clone(), None))
                .collect();
            if args.save {
                let mut inv = known.unwrap_or_default();
                let summary = inv.merge(&found);
                inv.save(&inv_path)?;
                for row in rows.iter_mut() {
                    row.0 = name_of_saved(&inv, &row.1);
                }
                if out.is_json() {
                    let devices: Vec<_> = rows.iter().map(row_json).collect();
                    out.document(&serde_json::json!({
                        "ok": true, "devices": devices,
                        "saved": {"path": inv_path.display().to_string(), "added": summary.added, "updated": summary.updated, "conflicts": summary.conflicts},
                    }));
                    return Ok(0);
                }
                print_table(&rows, out);
                out.line(&format!(
                    "saved {}: {} added, {} updated{}",
                    inv_path.display(),
                    summary.added.len(),
                    summary.updated.len(),
                    if summary.conflicts.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; left alone (another id answers at their address): {}",
                            summary.conflicts.join(", ")
                        )
                    }
                ));
                return Ok(0);
            }
            rows
        }
        None => {
            let inv = Inventory::load(&inv_path)?;
            let wait = seconds_arg("--timeout", args.timeout, true)?;
            fleet::each(inv.devices, args.concurrency, |e| async move {
                let (host, port) = match (&e.host, e.serial.is_some()) {
                    (Some(h), false) => (h.clone(), e.port.unwrap_or(DEFAULT_OTA_PORT)),
                    _ => {
                        let d = Discovered {
                            host: e.address(),
                            ..Discovered::default()
                        };
                        return (Some(e.name), d, Some("serial: not probed".to_string()));
                    }
                };
                let probed =
                    tokio::time::timeout(wait, fleet::discover::probe(&host, port, wait)).await;
                match probed {
                    Ok(Ok(d)) => {
                        let wrong =
                            e.id.as_ref()
                                .filter(|x| d.id.as_ref() != Some(*x))
                                .map(|x| format!("expected id {x}"));
                        (Some(e.name), d, wrong)
                    }
                    Ok(Err(err)) => (
                        Some(e.name),
                        Discovered {
                            host,
                            port,
                            ..Discovered::default()
                        },
                        Some(err.to_string()),
                    ),
                    Err(_) => (
                        Some(e.name),
                        Discovered {
                            host,
                            port,
                            ..Discovered::default()
                        },
                        Some(format!("no answer within {wait:?}")),
                    ),
                }
            })
            .await
        }
    };
    if out.is_json() {
        let devices: Vec<_> = rows.iter().map(row_json).collect();
        out.document(&serde_json::json!({"ok": true, "devices": devices}));
    } else {
        print_table(&rows, out);
    }
    Ok(0)
}

fn name_of_saved(inv: &Inventory, d: &Discovered) -> Option<String> {
    inv.devices
        .iter()
        .find(|e| {
            e.host.as_deref() == Some(d.host.as_str())
                && e.port.unwrap_or(DEFAULT_OTA_PORT) == d.port
        })
        .map(|e| e.name.clone())
}

fn row_json(row: &(Option<String>, Discovered, Option<String>)) -> serde_json::Value {
    let mut v = serde_json::to_value(&row.1).unwrap_or_default();
    v["name"] = row.0.clone().into();
    v["error"] = row.2.clone().into();
    v
}

fn print_table(rows: &[(Option<String>, Discovered, Option<String>)], out: &Output) {
    if rows.is_empty() {
        out.line("no devices found");
        return;
    }
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut table = vec![[
        "NAME".to_string(),
        "ADDRESS".into(),
        "ID".into(),
        "RUNTIME".into(),
        "VERSION".into(),
        "RELEASE".into(),
        "STATE".into(),
    ]];
    for (name, d, err) in rows {
        let address = if d.port == 0 {
            d.host.clone()
        } else {
            format!("{}:{}", d.host, d.port)
        };
        let runtime = match (d.protocol.as_str(), &d.runtime) {
            ("micro-ota", _) => "micro-ota".to_string(),
            (_, r) => dash(r),
        };
        let state = match err {
            Some(e) => e.clone(),
            None => dash(&d.state),
        };
        table.push([
            dash(name),
            address,
            dash(&d.id),
            runtime,
            dash(&d.version),
            d.release
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            state,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.line(line.join("  ").trim_end());
    }
}

/// The devices a fleet command takes: the inventory's (or a scan's), selected.
pub(crate) async fn fleet_devices(
    root: &Path,
    inventory: &Option<PathBuf>,
    scan_range: Option<(&str, u16, bool)>,
    select: &Option<String>,
) -> Result<Vec<FleetDevice>> {
    let selection = select.as_deref().map(str::parse::<Selection>).transpose()?;
    let devices = match scan_range {
        Some((cidr, port, force)) => {
            let found = scan(cidr, port, 1.0, 256, force).await?;
            let mut inv = Inventory::default();
            inv.merge(
                &found
                    .into_iter()
                    .filter(|d| d.protocol == "uota")
                    .collect::<Vec<_>>(),
            );
            if inv.devices.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "the scan of {cidr} (port {port}) found no uota device"
                )));
            }
            // A device that did not answer the scan (restarting, say) is not
            // in this rollout: say how many were found, so that a short count
            // shows. An inventory names the devices that must be reached.
            tracing::warn!(
                "the scan of {cidr} found {} uota devices; only these are rolled out to (a device that did not answer within 1 s is left out: use config/fleet.json to name every device)",
                inv.devices.len()
            );
            inv.devices
        }
        None => Inventory::load_devices(&inventory_path(root, inventory))?,
    };
    match selection {
        Some(s) => s.apply(&devices),
        None => Ok(devices),
    }
}

/// `uota full --all` / `uota fast --all`.
pub(crate) async fn rollout(args: &PushArgs, mode: PushMode, out: &Output) -> Result<i32> {
    let f = &args.fleet;
    let root = project_root(&args.target.project);
    let project = Project::load(&root)?;
    // Every option is checked before anything is scanned or pushed.
    let select = f
        .select
        .as_deref()
        .map(str::parse::<Selection>)
        .transpose()?;
    let groups: Groups = f.groups.parse()?;
    let max_failures = f
        .max_failures
        .as_deref()
        .map(str::parse::<Threshold>)
        .transpose()?;
    let health_wait = f
        .health_wait
        .map(|s| seconds_arg("--health-wait", s, true))
        .transpose()?;
    let retry_backoff = seconds_arg("--retry-backoff", f.retry_backoff, true)?;
    let device_timeout = seconds_arg("--device-timeout", f.device_timeout, true)?;
    let pause_between = seconds_arg("--pause-between", f.pause_between, true)?;
    if f.concurrency == 0 {
        return Err(Error::InvalidArgument(
            "--concurrency must be at least 1".into(),
        ));
    }
    let port = match &args.target.port {
        Some(p) => p.parse().map_err(|_| {
            Error::InvalidArgument(format!(
                "--port {p:?}: with --scan, give the OTA port number"
            ))
        })?,
        None => project.config.port,
    };
    let devices = fleet_devices(
        &root,
        &f.inventory,
        f.scan.as_deref().map(|c| (c, port, f.force)),
        &None,
    )
    .await?;
    let opts = RolloutOptions {
        groups,
        concurrency: f.concurrency,
        max_failures,
        health_wait,
        retries: f.retries,
        retry_backoff,
        device_timeout,
        pause_between,
        connect: super::connect_options(&args.target, Some(&project))?,
        push: super::push_options(args, &project, mode),
        ..RolloutOptions::for_project(&project, mode)?
    };
    let plan = RolloutPlan {
        devices: Some(devices),
        select,
        version: args.release_version.clone(),
        strict: args.strict,
        resume: match f.resume.as_deref() {
            None => Resume::New,
            Some("") => Resume::Latest,
            Some(id) => Resume::Id(id.to_string()),
        },
    };
    let rollout = plan.prepare(&project, opts)?;
    let stop = rollout.stop_handle();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!(
                "Ctrl-C: no further device is started (Ctrl-C again aborts those in flight)"
            );
            stop.stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.abort();
            }
        }
    });
    let mut view = LiveView::new(out, rollout.id());
    let report = rollout.run(&mut |ev| view.event(ev)).await;
    watcher.abort();
    view.finish();
    let report = report?;
    if let Some(path) = &f.junit {
        std::fs::write(path, report.to_junit()).map_err(|e| Error::io(path, e))?;
    }
    print_report(&report, out);
    Ok(match report.outcome {
        Outcome::Success => 0,
        Outcome::DevicesFailed => EXIT_DEVICES_FAILED,
        Outcome::Stopped => EXIT_STOPPED,
        Outcome::Cancelled => 130,
    })
}

fn print_report(r: &RolloutReport, out: &Output) {
    if out.is_json() {
        let mut v = r.to_json();
        v["ok"] = r.ok().into();
        out.document(&v);
        return;
    }
    let c = &r.summary;
    out.line(&format!(
        "rollout {} of {}: {} updated, {} unchanged, {} failed, {} rolled back, {} not reached, {} skipped, in {:.1} s",
        r.id, r.version, c.updated, c.unchanged, c.failed, c.rolled_back, c.not_reached, c.skipped, r.seconds
    ));
    if let Some(why) = &r.stopped {
        out.line(&format!("stopped: {why}"));
    }
    if !r.ok() {
        out.line(&format!(
            "state: {}/{}.json (`--resume` continues it)",
            fleet::ROLLOUTS_DIR,
            r.id
        ));
    }
}

fn device_line(d: &fleet::DeviceResult) -> String {
    let detail = match (&d.error, d.status) {
        (Some(e), _) => format!(": {}", e.message),
        (None, _) => format!(
            ": {} -> {}, {:.1} s, {} bytes{}",
            d.from.as_deref().unwrap_or("?"),
            d.to,
            d.seconds,
            d.bytes,
            if d.attempts > 1 {
                format!(", {} attempts", d.attempts)
            } else {
                String::new()
            }
        ),
    };
    format!(
        "  {:<11} {} ({}){detail}",
        d.status.as_str(),
        d.name,
        d.address
    )
}

/// What people see while a rollout runs: a line per device in flight and a
/// total per wave on a terminal; plain lines otherwise; nothing with --json.
struct LiveView {
    json: bool,
    bars: Option<(
        MultiProgress,
        HashMap<String, ProgressBar>,
        Option<ProgressBar>,
    )>,
}

impl LiveView {
    fn new(out: &Output, id: &str) -> Self {
        let json = out.is_json();
        let tty = !json && std::io::stdout().is_terminal();
        if !json {
            out.line(&format!("rollout {id}"));
        }
        LiveView {
            json,
            bars: tty.then(|| (MultiProgress::new(), HashMap::new(), None)),
        }
    }

    fn say(&self, text: &str) {
        match &self.bars {
            Some((mp, _, _)) => {
                let _ = mp.println(esc(text));
            }
            None => {
                use std::io::Write as _;
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{}", esc(text)).and_then(|()| o.flush());
            }
        }
    }

    fn event(&mut self, ev: &FleetEvent) {
        if self.json {
            return;
        }
        match ev {
            FleetEvent::GroupStarted { group, devices } => {
                self.say(&format!("group {group}: {devices} devices"));
                if let Some((mp, _, total)) = &mut self.bars {
                    let bar = mp.add(ProgressBar::new(*devices as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "group {prefix} [{bar:30}] {pos}/{len} done {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(group.to_string());
                    *total = Some(bar);
                }
            }
            FleetEvent::DeviceStarted { name, attempt, .. } => {
                if let Some((mp, bars, _)) = &mut self.bars {
                    let bar = bars.entry(name.clone()).or_insert_with(|| {
                        let b = mp.add(ProgressBar::new_spinner());
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    });
                    bar.set_message(format!(
                        "{}: pushing{}",
                        esc(name),
                        if *attempt > 1 {
                            format!(" (attempt {attempt})")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
            FleetEvent::HealthWaiting { name } => {
                if let Some((_, bars, _)) = &self.bars {
                    if let Some(b) = bars.get(name) {
                        b.set_message(format!("{}: waiting for its confirmation", esc(name)));
                    }
                }
            }
            FleetEvent::DeviceRetrying {
                name,
                attempt,
                error,
                after,
            } => {
                self.say(&format!(
                    "  retry       {name}: attempt {attempt} failed ({error}); again in {:.1} s",
                    after.as_secs_f64()
                ));
            }
            FleetEvent::DeviceFinished(d) => {
                if let Some((_, bars, total)) = &mut self.bars {
                    if let Some(b) = bars.remove(&d.name) {
                        b.finish_and_clear();
                    }
                    if let Some(t) = total {
                        t.inc(1);
                    }
                }
                self.say(&device_line(d));
            }
            FleetEvent::GroupFinished(g) => {
                if let Some((_, _, total)) = &mut self.bars {
                    if let Some(t) = total.take() {
                        t.finish_and_clear();
                    }
                }
                let c = &g.counts;
                self.say(&format!(
                    "group {}: {} updated, {} unchanged, {} failed, {} rolled back, {} not reached, {} skipped ({:.1} s)",
                    g.group, c.updated, c.unchanged, c.failed, c.rolled_back, c.not_reached, c.skipped, g.seconds
                ));
            }
            FleetEvent::Stopping { reason } => self.say(&format!("stopping: {reason}")),
        }
    }

    fn finish(&mut self) {
        if let Some((mp, bars, total)) = self.bars.take() {
            for (_, b) in bars {
                b.finish_and_clear();
            }
            if let Some(t) = total {
                t.finish_and_clear();
            }
            let _ = mp.clear();
        }
    }
}

/// `uota status`: one device's release state, or every device's with --all.
pub(crate) async fn status(args: StatusArgs, out: &Output) -> Result<i32> {
    let root = project_root(&args.target.project);
    let project = super::try_project(&root)?;
    let connect = super::connect_options(&args.target, project.as_ref())?;
    let devices = if args.all {
        fleet_devices(&root, &args.inventory, None, &args.select).await?
    } else {
        let link = super::link(&args.target, &project)?;
        let mut d = match &link {
            crate::device::Link::Tcp { host, port } => {
                FleetDevice::tcp("device", host.clone(), *port)
            }
            crate::device::Link::Serial { path, baud } => FleetDevice {
                serial: Some(path.clone().unwrap_or_else(|| "auto".into())),
                baud: Some(*baud),
                ..FleetDevice::tcp("device", "", 0)
            },
        };
        if d.serial.is_some() {
            d.host = None;
            d.port = None;
        }
        vec![d]
    };
    let wait = connect.timeout + connect.connect_timeout;
    let states = fleet::status::gather(&devices, &connect, args.concurrency, wait).await;
    let all_ok = states.iter().all(|s| s.reachable && s.error.is_none());
    if out.is_json() {
        out.document(&serde_json::json!({"ok": all_ok, "devices": states}));
    } else {
        for s in &states {
            let line = if !s.reachable || s.error.is_some() {
                format!(
                    "{} ({}): {}",
                    s.name,
                    s.address,
                    s.error.as_deref().unwrap_or("unreachable")
                )
            } else {
                let boots = s
                    .boot
                    .as_ref()
                    .and_then(|b| b.get("boots"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let rollback = s
                    .last_rollback
                    .as_ref()
                    .map(|r| {
                        format!(
                            ", last rollback {} -> {} ({})",
                            r.get("from").and_then(|v| v.as_str()).unwrap_or("?"),
                            r.get("to").and_then(|v| v.as_str()).unwrap_or("?"),
                            r.get("reason").and_then(|v| v.as_str()).unwrap_or("?")
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} ({}): {} release {} {}, {boots} boots{rollback}",
                    s.name,
                    s.address,
                    s.version.as_deref().unwrap_or("?"),
                    s.release.unwrap_or(0),
                    s.state.as_deref().unwrap_or("?"),
                )
            };
            out.line(&line);
        }
    }
    Ok(if all_ok { 0 } else { EXIT_DEVICES_FAILED })
}
