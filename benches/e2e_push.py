#!/usr/bin/env python3
"""End-to-end push benchmark against a virtual device.

Pushes two generated projects — 20 files / ~100 KB and 200 files / ~2 MB of
Python source — to one virtual device (MicroPython unix port running the uota
runtime on a littlefs image, on 127.0.0.1), with uota's protocol and, in the
same run, with micro-ota's `stream_ota` container (the peer: what micro-ota's
own CLI sends) against the same device in legacy mode. Prints median wall
times, payload bytes/s, bytes on the wire and the ratio.

    cargo build --release --features cli && python3 benches/e2e_push.py [--runs 3]
    python3 benches/e2e_push.py --links [--runs 5]

With --links: the side-by-side table instead, over three emulated links
(benches/link_emulator.py: loopback, 1 MB/s with 5 ms RTT, 200 KB/s with
20 ms RTT): micro-ota's stream push of the 200-file project (it always sends
every file) against uota's full push with every file resent, with one file
changed, and with nothing changed; medians, the methods rotated each round,
and the ratio uota / micro-ota (below 0.33 is the goal).

Only loopback traffic. Each push is followed by a device reboot; the next push
starts once the device answers with the new version.
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from link_emulator import LinkEmulator  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UOTA = os.environ.get("UOTA_BIN", os.path.join(ROOT, "target", "release", "uota"))
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_project(path, files, size, port, seed):
    rng = random.Random(seed)
    words = ["sensor", "value", "reading", "update", "config", "buffer", "result", "state", "index", "count"]
    os.makedirs(os.path.join(path, "config"))
    os.makedirs(os.path.join(path, "app"))
    with open(os.path.join(path, "config", "ota.json"), "w") as f:
        json.dump({"version": "0.0.0", "hostname": HOST, "port": port,
                   "fastOtaFiles": ["app/**", "main.py"], "fullOtaFiles": ["**"], "excludedFiles": [],
                   "legacy": True}, f)
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write("async def run():\n    pass\n")
    total = 0
    for i in range(files - 1):
        lines = []
        n = 0
        while n < size:
            a, b = rng.choice(words), rng.choice(words)
            line = f"def {a}_{i}_{len(lines)}({b}):\n    return {b} * {rng.randint(0, 999)} + {rng.randint(0, 99)}\n"
            lines.append(line)
            n += len(line)
        text = "".join(lines)
        total += len(text)
        with open(os.path.join(path, "app", f"m{i:03d}.py"), "w") as f:
            f.write(text)
    return total


def uota(*args, check=True):
    return subprocess.run([UOTA, *args], capture_output=True, text=True, check=check)


def wait_version(port, version, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = uota("version", "--host", HOST, "--port", str(port), check=False)
        if r.returncode == 0 and r.stdout.strip() == version:
            return
        time.sleep(0.05)
    raise SystemExit(f"device never reported {version}")


def push(project, port, version, protocol, *extra, via=None):
    """A full push (to `via`, a relay port, when given); the wall time ends
    when the device answers with the new version."""
    t0 = time.perf_counter()
    r = uota("--json", "full", "--project", project, "--host", HOST, "--port", str(via or port),
             "--version", version, "--protocol", protocol, *extra, check=False)
    if r.returncode != 0:
        raise SystemExit(f"push failed: {r.stdout}{r.stderr}")
    report = json.loads(r.stdout)
    wait_version(via or port, version)
    wall = time.perf_counter() - t0
    return wall, report


LINKS = (("loopback", 0, 0.0), ("1 MB/s, 5 ms RTT", 1_000_000, 0.005), ("200 KB/s, 20 ms RTT", 200_000, 0.020))


def links_table(work, port, runs):
    """uota against micro-ota's stream push, side by side, per link."""
    project = os.path.join(work, "links")
    make_project(project, 200, 10 * 1024, port, seed=200)
    target = os.path.join(project, "app", "m000.py")
    counter = [0]

    def version():
        counter[0] += 1
        return f"1.{counter[0]}.0"

    def edit():
        with open(target, "a") as f:
            f.write(f"# edit {counter[0]}\n")

    methods = {
        "micro-ota stream": lambda via: push(project, port, version(), "micro-ota", via=via)[0],
        "uota, every file": lambda via: push(project, port, version(), "uota", "--resend", via=via)[0],
        "uota, one changed": lambda via: (edit(), push(project, port, version(), "uota", via=via))[1][0],
        "uota, none changed": lambda via: push(project, port, version(), "uota", via=via)[0],
    }
    print(f"{'link':22} " + " ".join(f"{m:>19}" for m in methods))
    for name, rate, rtt in LINKS:
        emu = LinkEmulator(HOST, 0, HOST, port, rate, rtt)
        _, via = emu.start()
        times = {m: [] for m in methods}
        order = list(methods)
        methods["uota, none changed"](via)  # warm up: the device holds this project
        for r in range(runs):
            for m in order[r % len(order):] + order[: r % len(order)]:
                times[m].append(methods[m](via))
        emu.stop()
        med = {m: statistics.median(v) for m, v in times.items()}
        print(f"{name:22} " + " ".join(f"{med[m]:18.3f}s" for m in methods))
        base = med["micro-ota stream"]
        print(f"{'  uota / micro-ota':22} {'':>19} " + " ".join(f"{med[m] / base:19.2f}" for m in list(methods)[1:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--links", action="store_true", help="the side-by-side table over emulated links")
    args = ap.parse_args()
    if not os.path.exists(UOTA):
        raise SystemExit(f"{UOTA} not found: cargo build --release --features cli")
    work = tempfile.mkdtemp(prefix="uota-bench-")
    port = free_port()
    sim = subprocess.Popen([UOTA, "sim", "--image", os.path.join(work, "flash.img"), "--image-size", "8M",
                            "--host", HOST, "--port", str(port), "--legacy"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while uota("ping", "--host", HOST, "--port", str(port), check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("virtual device did not start")
            time.sleep(0.1)
        if args.links:
            links_table(work, port, args.runs)
            return
        cases = [("A: 20 files / ~100 KB", 20, 5 * 1024), ("B: 200 files / ~2 MB", 200, 10 * 1024)]
        counter = 0
        print(f"{'case':24} {'method':14} {'median s':>9} {'payload B/s':>12} {'wire bytes':>11}")
        for name, files, size in cases:
            project = os.path.join(work, f"p{files}")
            payload = make_project(project, files, size, port, seed=files)
            results = {}
            for method, protocol in (("uota", "uota"), ("micro-ota stream", "micro-ota")):
                extra = ("--resend",) if protocol == "uota" else ()
                walls = []
                wire = 0
                for run in range(args.runs + 1):  # the first run warms up
                    counter += 1
                    wall, report = push(project, port, f"0.{counter}.0", protocol, *extra)
                    wire = report["wire_bytes"]
                    if run:
                        walls.append(wall)
                med = statistics.median(walls)
                results[method] = med
                print(f"{name:24} {method:14} {med:9.3f} {payload / med:12.0f} {wire:11d}")
            ratio = results["micro-ota stream"] / results["uota"]
            print(f"{name:24} uota full resend is {ratio:.2f}x the micro-ota stream push (same device, same run)")

        # Delta, no-op and compression on the 200-file project (issue 4's figures).
        project = os.path.join(work, "p200")
        print()
        print(f"{'200-file project':24} {'push':22} {'median s':>9} {'file bytes':>11} {'payload':>9} {'wire bytes':>11}")
        target = os.path.join(project, "app", "m000.py")
        rows = {}
        for label, extra, edit in (
            ("full, raw", ("--resend", "--no-compress"), False),
            ("full, deflate", ("--resend",), False),
            ("delta: 1 file changed", (), True),
            ("same files, new version", (), False),
        ):
            walls, report = [], None
            for run in range(args.runs + 1):
                counter += 1
                if edit:
                    with open(target, "a") as f:
                        f.write(f"# edit {counter}\n")
                wall, report = push(project, port, f"0.{counter}.0", "uota", *extra)
                if run:
                    walls.append(wall)
            med = statistics.median(walls)
            rows[label] = (med, report)
            print(f"{'':24} {label:22} {med:9.3f} {report['file_bytes']:11d} {report['payload_bytes']:9d} {report['wire_bytes']:11d}")
        full_raw = rows["full, raw"]
        for label in ("full, deflate", "delta: 1 file changed", "same files, new version"):
            med, rep = rows[label]
            print(f"{'':24} {label:22} {full_raw[0] / med:6.2f}x faster, "
                  f"{full_raw[1]['wire_bytes'] / max(rep['wire_bytes'], 1):8.1f}x fewer wire bytes than full raw")
    finally:
        sim.terminate()
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
