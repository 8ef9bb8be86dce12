#!/usr/bin/env python3
"""Heap benchmark: the smallest MicroPython heap at which each job succeeds.

A virtual device (MicroPython unix port, the uota runtime on a littlefs image
of 8 MB) is started with `uota sim --heap N`, for the runtime installed as
.mpy and as .py. For each job the heap is bisected (in 8 KB steps) to the
smallest size at which the job succeeds:

  boot    the device answers a ping
  full    a full push of a 200-file / ~2 MiB project (fresh device)
  delta   then a push with one file changed (a full push on top)

It also prints the free heap of an idle device (`info` mem_idle: after the
runtime unloaded what the last connection needed) at a 256 KB heap.

    cargo build --release --features cli && python3 benches/heap.py [--quick]

Only loopback traffic (127.0.0.1, a free port per trial).
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UOTA = os.environ.get("UOTA_BIN", os.path.join(ROOT, "target", "release", "uota"))
HOST = "127.0.0.1"
IMAGE_SIZE = "8M"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_project(path, files, size, seed=7):
    rng = random.Random(seed)
    os.makedirs(os.path.join(path, "config"))
    os.makedirs(os.path.join(path, "app"))
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write("async def run():\n    pass\n")
    for i in range(files - 1):
        out, n = [], 0
        while n < size:
            line = "def f_%d_%d(x):\n    return x * %d + %d\n" % (i, len(out), rng.randint(0, 999), rng.randint(0, 99))
            out.append(line)
            n += len(line)
        with open(os.path.join(path, "app", "m%03d.py" % i), "w") as f:
            f.write("".join(out))


def write_config(project, port):
    with open(os.path.join(project, "config", "ota.json"), "w") as f:
        json.dump({"version": "0.0.0", "hostname": HOST, "port": port,
                   "fastOtaFiles": ["app/**", "main.py"], "fullOtaFiles": ["**"], "excludedFiles": []}, f)


def run(project, *args, timeout=120):
    """The uota command; a hung one (a device thrashing its heap) counts as failed."""
    try:
        return subprocess.run([UOTA, *args], cwd=project, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "timed out")


class Trial:
    """A fresh device (from a provisioned image) at one heap size."""

    def __init__(self, work, project, image, heap):
        self.project = project
        self.port = free_port()
        write_config(project, self.port)
        self.image = os.path.join(work, "trial.img")
        shutil.copy(image, self.image)
        self.log = open(os.path.join(work, "trial.log"), "w")
        self.proc = subprocess.Popen(
            [UOTA, "sim", "--image", self.image, "--host", HOST, "--port", str(self.port), "--heap", heap],
            cwd=project, stdout=self.log, stderr=subprocess.STDOUT)

    def up(self, wait=20):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if run(self.project, "ping", "--timeout", "5", timeout=30).returncode == 0:
                return True
            time.sleep(0.3)
        return False

    def push(self, version):
        r = run(self.project, "full", "--version", version)
        if r.returncode != 0:
            return False
        v = run(self.project, "--json", "version")
        return v.returncode == 0 and version in v.stdout

    def info(self):
        r = run(self.project, "--json", "info")
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def job(work, project, image, heap, name):
    t = Trial(work, project, image, heap)
    try:
        if not t.up():
            return False
        if name == "boot":
            return True
        if not t.push("1.0.1"):
            return False
        if name == "full":
            return True
        path = os.path.join(project, "app", "m000.py")
        with open(path, "a") as f:
            f.write("# changed\n")
        try:
            return t.up() and t.push("1.0.2")
        finally:
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("# changed\n", ""))
    finally:
        t.stop()


def smallest(work, project, image, name, lo, hi):
    """Bisect in 8 KB steps: the smallest heap (KB) in (lo, hi] where the job succeeds."""
    if not job(work, project, image, "%dk" % hi, name):
        return None
    while hi - lo > 8:
        mid = (lo + hi) // 2 // 8 * 8
        if mid <= lo:
            break
        if job(work, project, image, "%dk" % mid, name):
            hi = mid
        else:
            lo = mid
    return hi


def provision(work, project, code):
    image = os.path.join(work, "base-%s.img" % code)
    port = free_port()
    write_config(project, port)
    log = open(os.path.join(work, "provision.log"), "w")
    p = subprocess.Popen([UOTA, "sim", "--image", image, "--image-size", IMAGE_SIZE, "--host", HOST,
                          "--port", str(port), "--heap", "1024k", "--" + code], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while run(project, "ping", "--timeout", "5", timeout=30).returncode != 0:
            if time.monotonic() > deadline or p.poll() is not None:
                sys.exit("provisioning a %s device failed; see %s" % (code, log.name))
            time.sleep(0.3)
    finally:
        p.terminate()
        p.wait(10)
        log.close()
    return image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the .mpy runtime only")
    args = ap.parse_args()
    if not os.path.exists(UOTA):
        sys.exit("build first: cargo build --release --features cli")
    work = tempfile.mkdtemp(prefix="uota-heap-")
    project = os.path.join(work, "project")
    make_project(project, 200, 10 * 1024)
    rows = []
    for code in ["mpy"] if args.quick else ["mpy", "py"]:
        image = provision(work, project, code)
        t = Trial(work, project, image, "256k")
        idle = None
        if t.up():
            run(project, "ping")
            idle = t.info().get("mem_idle")
        t.stop()
        row = {"runtime": "." + code, "idle_free_at_256k": idle}
        lo = 32
        for name in ["boot", "full", "delta"]:
            found = smallest(work, project, image, name, lo, 512)
            row[name] = found
            lo = (found or 512) - 8  # a later job needs at least as much
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| runtime | boots at | full push at | delta push at | idle free heap at 256 KB |")
    print("|---|---|---|---|---|")
    for r in rows:
        kb = lambda v: "> 512 KB" if v is None else "%d KB" % v
        print("| %s | %s | %s | %s | %s |" % (r["runtime"], kb(r["boot"]), kb(r["full"]), kb(r["delta"]),
                                            "?" if r["idle_free_at_256k"] is None else "%d B" % r["idle_free_at_256k"]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
