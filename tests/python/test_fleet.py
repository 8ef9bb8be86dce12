"""Fleets against real virtual devices: rollouts in waves (sync and async),
events, failures that stay with their device, thresholds, resume, reports,
scans, status, and refusals before anything is pushed."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

import uota
from conftest import HAVE_MICROPYTHON, make_project, next_block, wait_until

FLEET_KEY = "fleet-test-key-0123456789abcdef"
PORT = 2018


@dataclass
class FleetEnv:
    """Started virtual devices on ``<base>.1`` ... ``<base>.N`` and a project
    whose inventory lists them as d01 ... dNN (d01 tagged ``canary``) with
    their ids, dev01 ... devNN; each device's key derives from the fleet key
    of the project's secrets."""

    base: str
    project: Path
    devices: list[uota.VirtualDevice]
    logs: list[Path] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f"d{i:02}" for i in range(1, len(self.devices) + 1)]

    @property
    def inventory(self) -> Path:
        return self.project / "config" / "fleet.json"

    @property
    def state_dir(self) -> Path:
        return self.project / ".uota" / "rollouts"

    def versions(self) -> list[str]:
        """Every device's active release, asked directly."""

        def version(vd: uota.VirtualDevice) -> str:
            with uota.Device(vd.host, vd.port) as dev:
                return dev.version()

        return [wait_until(lambda: version(vd)) for vd in self.devices]

    def break_the_app(self) -> None:
        (self.project / "main.py").write_text("async def run():\n    raise ValueError('broken release')\n")


def set_config(project: Path, **values: object) -> None:
    config = project / "config" / "ota.json"
    data = json.loads(config.read_text())
    data.update(values)
    config.write_text(json.dumps(data, indent=2))


@pytest.fixture
def make_fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., FleetEnv]]:
    """Factory: ``make_fleet(n, keys={i: key})`` starts n devices (device i
    provisioned with ``key`` instead of its derived one) and their project."""
    if not HAVE_MICROPYTHON:
        pytest.skip("the MicroPython unix port (micropython) is not installed")
    started: list[FleetEnv] = []

    def make(n: int, keys: Optional[dict[int, str]] = None) -> FleetEnv:
        base = next_block()
        root = tmp_path / f"fleet{len(started)}"
        root.mkdir()
        env = FleetEnv(base, root / "project", [])
        started.append(env)
        for i in range(1, n + 1):
            device_id = f"dev{i:02}"
            log = root / f"d{i:02}.log"
            env.logs.append(log)
            env.devices.append(
                uota.VirtualDevice(
                    root / f"d{i:02}",
                    host=f"{base}.{i}",
                    port=PORT,
                    signing_key=(keys or {}).get(i) or uota.derive_device_key(FLEET_KEY, device_id),
                    device_id=device_id,
                    log=log,
                )
            )

        async def start_all() -> None:
            await asyncio.gather(*(vd.start_async() for vd in env.devices))

        asyncio.run(start_all())
        make_project(env.project, f"{base}.1", PORT, None, None)
        # A release that runs healthy for a second is confirmed.
        set_config(env.project, confirmAfter=1, watchdog=3)
        (env.project / "config" / ".ota.secrets.json").write_text(json.dumps({"fleetKey": FLEET_KEY}))
        inventory = [
            {
                "name": f"d{i:02}",
                "host": f"{base}.{i}",
                "port": PORT,
                "id": f"dev{i:02}",
                "tags": ["canary"] if i == 1 else [],
            }
            for i in range(1, n + 1)
        ]
        env.inventory.write_text(json.dumps({"devices": inventory}, indent=2))
        return env

    yield make
    for env in started:
        for vd in env.devices:
            vd.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for env in started:
            for log in env.logs:
                text = log.read_text(errors="replace") if log.exists() else ""
                print(f"--- device log {log} ---\n{text[-3000:]}")


def statuses(report: uota.RolloutReport) -> list[str]:
    return [d["status"] for d in report.devices]


def device(report: uota.RolloutReport, name: str) -> Any:
    return next(d for d in report.devices if d["name"] == name)


def check_junit(report: uota.RolloutReport) -> ET.Element:
    """The JUnit document parses, and its counts are the report's."""
    root = ET.fromstring(report.to_junit())
    assert root.tag == "testsuites"
    s = report.summary
    assert int(root.attrib["tests"]) == len(report.devices)
    assert int(root.attrib["failures"]) == s["failed"] + s["rolled_back"]
    assert int(root.attrib["skipped"]) == s["not_reached"] + s["skipped"]
    assert int(root.attrib["errors"]) == 0
    suites = root.findall("testsuite")
    assert len(suites) == len(report.groups)
    cases = []
    for suite, group in zip(suites, report.groups):
        mine = suite.findall("testcase")
        cases += mine
        counts = group["counts"]
        assert suite.attrib["name"] == f"group {group['group']}"
        assert int(suite.attrib["tests"]) == len(mine) == group["devices"]
        failures = [c for c in mine if c.find("failure") is not None]
        skipped = [c for c in mine if c.find("skipped") is not None]
        assert int(suite.attrib["failures"]) == len(failures) == counts["failed"] + counts["rolled_back"]
        assert int(suite.attrib["skipped"]) == len(skipped) == counts["not_reached"] + counts["skipped"]
    assert [c.attrib["name"] for c in cases] == [d["name"] for d in report.devices]
    for case, d in zip(cases, report.devices):
        failure = case.find("failure")
        if d["status"] in ("failed", "rolled_back"):
            assert failure is not None and failure.attrib["type"] == d["status"]
            assert d["error"] is not None and d["error"]["kind"] in failure.attrib["message"]
        else:
            assert failure is None
    return root


def test_a_rollout_in_waves_updates_every_device_and_reports_it(make_fleet: Callable[..., FleetEnv]) -> None:
    fleet = make_fleet(5)
    before = fleet.versions()
    events: list[dict[str, Any]] = []
    report = uota.rollout(
        fleet.project,
        version="2.0.0",
        groups="1,100%",
        max_failures=0,
        health_wait=60,
        on_event=events.append,
    )
    assert isinstance(report, uota.RolloutReport)
    assert (report.outcome, report.ok, report.stopped) == ("success", True, None)
    assert (report.version, report.mode) == ("2.0.0", "full")
    assert statuses(report) == ["updated"] * 5
    assert [d["name"] for d in report.devices] == fleet.names
    for i, (d, old) in enumerate(zip(report.devices, before), 1):
        assert d["id"] == f"dev{i:02}"
        assert (d["from"], d["to"]) == (old, "2.0.0")
        assert d["group"] == (1 if i == 1 else 2)
        assert d["attempts"] == 1 and d["bytes"] > 0 and d["seconds"] > 0
        assert d["error"] is None and d["address"] == f"{fleet.base}.{i}:{PORT}"
    assert [g["devices"] for g in report.groups] == [1, 4]
    assert report.summary == {
        "updated": 5,
        "unchanged": 0,
        "failed": 0,
        "rolled_back": 0,
        "not_reached": 0,
        "skipped": 0,
    }
    assert report.seconds > 0

    # Events: each wave starts and ends, the canary's before the second's;
    # every device starts, waits for its confirmation and finishes.
    waves = [(e["event"], e["group"]) for e in events if e["event"].startswith("group_")]
    assert waves == [("group_started", 1), ("group_finished", 1), ("group_started", 2), ("group_finished", 2)]
    assert events[0] == {"event": "group_started", "group": 1, "devices": 1}
    # Devices finish in any order within a wave; the report is in rollout order.
    finished = [e["device"] for e in events if e["event"] == "device_finished"]
    assert sorted(finished, key=lambda d: d["name"]) == report.devices
    started = sorted(e["name"] for e in events if e["event"] == "device_started")
    assert started == fleet.names
    assert sorted(e["name"] for e in events if e["event"] == "health_waiting") == fleet.names
    last = next(e for e in reversed(events) if e["event"] == "group_finished")
    assert last["counts"] == {**report.summary, "updated": 4} and last["devices"] == 4
    assert not any(e["event"] == "stopping" for e in events)
    json.dumps(events)  # plain JSON values

    # The reports.
    as_json = json.loads(report.to_json())
    assert as_json["id"] == report.id and as_json["outcome"] == "success"
    assert as_json["devices"] == report.devices and as_json["summary"] == report.summary
    root = check_junit(report)
    assert root.findall(".//failure") == [] and root.findall(".//skipped") == []
    assert repr(report) == f"RolloutReport(id={report.id!r}, version='2.0.0', outcome='success', devices=5)"

    # Every device runs the new release, confirmed.
    assert fleet.versions() == ["2.0.0"] * 5
    states = uota.Fleet.load(fleet.inventory).status(fleet.project)
    assert [s.name for s in states] == fleet.names
    for i, s in enumerate(states, 1):
        assert isinstance(s, uota.DeviceState)
        assert s.reachable and s.error is None, s
        assert (s.id, s.version, s.state) == (f"dev{i:02}", "2.0.0", "confirmed")
        assert s.boot is not None and s.last_rollback is None
    # The state file says the rollout finished.
    saved = json.loads((fleet.state_dir / f"{report.id}.json").read_text())
    assert saved["finished"] is True


def test_rollout_async_selects_devices_and_a_second_run_changes_nothing(
    make_fleet: Callable[..., FleetEnv],
) -> None:
    fleet = make_fleet(4)
    before = fleet.versions()
    events: list[dict[str, Any]] = []

    async def main() -> tuple[uota.RolloutReport, uota.RolloutReport, list[uota.DeviceState]]:
        inventory = uota.Fleet.load(fleet.inventory)
        # d02 is left out.
        first = await uota.rollout_async(
            fleet.project,
            fleet=inventory,
            select="tag:canary,d0[34]",
            version="3.0.0",
            groups="1,100%",
            on_event=events.append,
        )
        second = await uota.rollout_async(fleet.project, fleet=inventory, version="3.0.0")
        states = await inventory.status_async(fleet.project)
        return first, second, states

    first, second, states = asyncio.run(main())
    assert first.outcome == "success" and first.ok
    assert [d["name"] for d in first.devices] == ["d01", "d03", "d04"]
    assert statuses(first) == ["updated"] * 3
    assert {e["event"] for e in events} >= {"group_started", "device_started", "device_finished", "group_finished"}
    assert [e["device"]["name"] for e in events if e["event"] == "device_finished"][0] == "d01"
    # The whole fleet: only d02 has anything to do.
    assert second.outcome == "success" and second.id != first.id
    assert statuses(second) == ["unchanged", "updated", "unchanged", "unchanged"]
    assert device(second, "d02")["from"] == before[1]
    check_junit(second)
    assert [s.version for s in states] == ["3.0.0"] * 4
    assert fleet.versions() == ["3.0.0"] * 4


def test_a_device_with_the_wrong_key_fails_alone(make_fleet: Callable[..., FleetEnv]) -> None:
    fleet = make_fleet(4, keys={2: "not-the-fleet-key"})
    before = fleet.versions()
    report = uota.rollout(fleet.project, version="3.0.0", retries=2, retry_backoff=0.2)
    assert report.outcome == "devices_failed" and not report.ok
    assert statuses(report) == ["updated", "failed", "updated", "updated"]
    wrong = device(report, "d02")
    assert wrong["error"]["kind"] == "SignatureMismatch", wrong
    assert wrong["attempts"] == 1, "a refused release is not retried"
    assert report.summary["failed"] == 1 and report.summary["updated"] == 3
    root = check_junit(report)
    assert len(root.findall(".//failure")) == 1
    assert fleet.versions() == ["3.0.0", before[1], "3.0.0", "3.0.0"]
    states = uota.Fleet.load(fleet.inventory).status(fleet.project)
    assert [s.version for s in states] == ["3.0.0", before[1], "3.0.0", "3.0.0"]


def test_a_failing_canary_stops_the_rollout(make_fleet: Callable[..., FleetEnv]) -> None:
    fleet = make_fleet(4)
    before = fleet.versions()
    fleet.break_the_app()
    events: list[dict[str, Any]] = []
    report = uota.rollout(
        fleet.project,
        version="6.6.6",
        groups="1,100%",
        max_failures=0,
        health_wait=60,
        on_event=events.append,
    )
    assert report.outcome == "stopped" and not report.ok
    assert report.stopped is not None and "group 1" in report.stopped
    canary = device(report, "d01")
    assert canary["status"] == "rolled_back", report.devices
    assert canary["error"]["kind"] == "RolledBack"
    assert statuses(report)[1:] == ["not_reached"] * 3
    for d in report.devices[1:]:
        error = d["error"]
        assert error is not None and error["kind"] == "NotReached" and d["attempts"] == 0
    kinds = [e["event"] for e in events]
    assert "stopping" in kinds
    assert [e["name"] for e in events if e["event"] == "device_started"] == ["d01"]
    root = check_junit(report)
    assert len(root.findall(".//failure")) == 1 and len(root.findall(".//skipped")) == 3
    # The canary runs its previous release again; the others were not touched.
    assert fleet.versions() == before
    states = uota.Fleet.load(fleet.inventory).status(fleet.project)
    assert states[0].last_rollback is not None


def test_an_exception_in_on_event_stops_the_rollout_and_resume_continues_it(
    make_fleet: Callable[..., FleetEnv],
) -> None:
    fleet = make_fleet(3)
    before = fleet.versions()
    calls: list[dict[str, Any]] = []

    def on_event(ev: dict[str, Any]) -> None:
        calls.append(ev)
        if ev["event"] == "device_finished":
            raise RuntimeError("the monitor broke")

    with pytest.raises(RuntimeError, match="the monitor broke"):
        uota.rollout(fleet.project, version="4.0.0", groups="1,100%", on_event=on_event)
    assert calls[-1]["event"] == "device_finished", "not called again after it raised"
    # The canary was updated; no further device was started.
    assert fleet.versions() == ["4.0.0", before[1], before[2]]
    [state_file] = list(fleet.state_dir.glob("*.json"))
    saved = json.loads(state_file.read_text())
    assert saved["finished"] is False
    assert [d["name"] for d in saved["devices"]] == ["d01"]

    # resume=True continues it: the canary is left alone.
    report = uota.rollout(fleet.project, version="4.0.0", groups="1,100%", resume=True)
    assert report.id == state_file.stem
    assert report.outcome == "success"
    assert statuses(report) == ["updated"] * 3
    assert device(report, "d01")["seconds"] == saved["devices"][0]["seconds"]
    assert fleet.versions() == ["4.0.0"] * 3
    # Finished: there is nothing left to resume, by default or by id.
    with pytest.raises(uota.ConfigError, match="no unfinished rollout"):
        uota.rollout(fleet.project, version="4.0.0", resume=True)
    again = uota.rollout(fleet.project, version="4.0.0", resume=report.id)
    assert again.id == report.id and statuses(again) == ["updated"] * 3


def test_scan_finds_exactly_the_devices(make_fleet: Callable[..., FleetEnv]) -> None:
    fleet = make_fleet(3)
    found = uota.Fleet.scan(f"{fleet.base}.0/24", port=PORT, timeout=2.0)
    assert [d.host for d in found] == [vd.host for vd in fleet.devices]
    for i, d in enumerate(found, 1):
        assert isinstance(d, uota.Discovered)
        assert (d.port, d.protocol, d.id, d.state) == (PORT, "uota", f"dev{i:02}", "confirmed")
        assert d.version and d.runtime and isinstance(d.release, int) and isinstance(d.auth, bool)
    assert repr(found[0]).startswith(f"Discovered(host='{fleet.base}.1', port={PORT}, protocol='uota', id='dev01'")

    async def scan_async() -> list[uota.Discovered]:
        return await uota.Fleet.scan_async(f"{fleet.base}.0/24", port=PORT, timeout=2.0)

    assert [(d.host, d.id) for d in asyncio.run(scan_async())] == [(d.host, d.id) for d in found]
    # Another port: nothing there.
    assert uota.Fleet.scan(f"{fleet.base}.0/29", port=PORT + 1, timeout=0.5) == []

    # An inventory made from the scan; status tells an entry that expects
    # another id, and one where nothing answers.
    entries: list[Any] = [{"name": f"dev-{d.id}", "host": d.host, "port": d.port, "id": d.id} for d in found]
    entries[2]["id"] = "someone-else"
    entries.append(uota.FleetDevice("gone", host=f"{fleet.base}.9", port=PORT))
    states = uota.Fleet(devices=entries).status(timeout=5.0)
    assert [s.name for s in states] == ["dev-dev01", "dev-dev02", "dev-dev03", "gone"]
    assert all(s.reachable and s.error is None for s in states[:2])
    assert states[2].reachable and states[2].id == "dev03"
    assert states[2].error is not None and "someone-else" in states[2].error
    assert not states[3].reachable and states[3].error


def test_bad_input_is_refused_before_anything_is_pushed(
    make_fleet: Callable[..., FleetEnv], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = make_fleet(2)
    before = fleet.versions()
    project = fleet.project
    good = fleet.inventory.read_text()

    def refused(exc: type[BaseException], says: str, **kw: Any) -> None:
        with pytest.raises(exc, match=says):
            uota.rollout(project, version="9.0.0", **kw)

    refused(uota.InvalidArgument, "matches none", select="tag:nope")
    refused(uota.InvalidArgument, "unknown kind", select="colour:red")
    refused(uota.InvalidArgument, "--groups", groups="1,x")
    refused(uota.InvalidArgument, "--groups", groups="120%")
    refused(uota.InvalidArgument, "--max-failures", max_failures="ten")
    refused(uota.InvalidArgument, "max_failures=-1", max_failures=-1)
    refused(uota.InvalidArgument, "health_wait", health_wait=-1.0)
    refused(uota.InvalidArgument, "device_timeout", device_timeout=float("nan"))
    refused(uota.InvalidArgument, "concurrency", concurrency=0)
    refused(uota.InvalidArgument, "full", mode="medium")
    refused(uota.InvalidArgument, "not a rollout id", resume="../elsewhere")
    refused(uota.ConfigError, "no unfinished rollout", resume=True)
    refused(TypeError, "callable", on_event=42)
    refused(TypeError, "max_failures", max_failures=1.5)
    refused(TypeError, "resume", resume=3)
    # The async twin checks its arguments when it is called.
    with pytest.raises(uota.InvalidArgument, match="--groups"):
        uota.rollout_async(project, groups="1,x")
    # Inventories: malformed, empty, missing; a project that is none.
    fleet.inventory.write_text('{"devices": [{"name": "x"}]}')
    refused(uota.ConfigError, "neither")
    with pytest.raises(uota.ConfigError, match="neither") as info:
        uota.Fleet.load(fleet.inventory)
    assert info.value.path == str(fleet.inventory)
    fleet.inventory.write_text("not json")
    refused(uota.ConfigError, "not a fleet inventory")
    fleet.inventory.write_text('{"devices": []}')
    refused(uota.ConfigError, "lists no device")
    fleet.inventory.unlink()
    refused(uota.ConfigError, "no fleet inventory")
    with pytest.raises(uota.ConfigError):
        uota.rollout(tmp_path / "no-project", fleet=uota.Fleet(devices=[{"name": "a", "host": "127.0.0.1"}]))
    fleet.inventory.write_text(good)
    # A Fleet refuses malformed entries.
    for entries, says in [
        ([{"name": "x"}], "neither"),
        ([{"name": "x", "hots": "h"}], "unknown field `hots`"),
        ([{"name": "x", "host": "h", "serial": "/dev/x"}], "both"),
        ([{"name": "a", "host": "h"}, {"name": "a", "host": "i"}], "two devices are named"),
        ([{"name": "a", "host": "h", "tags": "canary"}], "not a fleet device"),
    ]:
        with pytest.raises(uota.InvalidArgument, match=says):
            uota.Fleet(devices=entries)  # type: ignore[arg-type]
    with pytest.raises(uota.InvalidArgument, match="port 0"):
        uota.FleetDevice("x", host="h", port=0)
    with pytest.raises(TypeError):
        uota.Fleet(devices=["x"])  # type: ignore[list-item]
    with pytest.raises(uota.InvalidArgument, match="matches none"):
        uota.Fleet.load(fleet.inventory).select("tag:nope")
    # Scans.
    with pytest.raises(uota.InvalidArgument, match="more than a /16"):
        uota.Fleet.scan("127.0.0.0/8")
    with pytest.raises(uota.InvalidArgument, match="not an address range"):
        uota.Fleet.scan("hello")
    with pytest.raises(uota.InvalidArgument, match="timeout"):
        uota.Fleet.scan(f"{fleet.base}.0/30", timeout=0)
    monkeypatch.setenv("UOTA_LOOPBACK_ONLY", "1")
    with pytest.raises(uota.InvalidArgument, match="not a loopback address"):
        uota.Fleet.scan("192.168.7.0/30")

    # Nothing was pushed, and no rollout started.
    assert fleet.versions() == before
    assert not fleet.state_dir.exists()


def test_fleet_objects() -> None:
    """Fleet, FleetDevice: construction, selection, equality, repr (no device)."""
    canary = uota.FleetDevice("hall-1", host="hall-1.local", tags=["canary"], id="a4cf12")
    assert (canary.name, canary.host, canary.port, canary.tags, canary.id) == (
        "hall-1",
        "hall-1.local",
        None,
        ["canary"],
        "a4cf12",
    )
    assert (canary.address, canary.link) == ("hall-1.local:2018", "tcp://hall-1.local:2018")
    assert repr(canary) == "FleetDevice(name='hall-1', host='hall-1.local', tags=['canary'], id='a4cf12')"
    bench = uota.FleetDevice("bench", serial="/dev/ttyUSB0", baud=115200)
    assert (bench.serial, bench.baud, bench.host, bench.address) == ("/dev/ttyUSB0", 115200, None, "/dev/ttyUSB0")
    fleet = uota.Fleet(
        devices=[
            canary,
            {"name": "hall-2", "host": "10.0.4.22", "port": 2020},
            {"name": "lab", "host": "10.0.5.1", "tags": ["lab"]},
            bench,
        ]
    )
    assert len(fleet) == 4 and repr(fleet) == "Fleet(['hall-1', 'hall-2', 'lab', 'bench'])"
    assert fleet.devices[0] == canary and fleet.devices[0] is not canary
    assert fleet.devices[1] == uota.FleetDevice("hall-2", host="10.0.4.22", port=2020)
    assert [d.name for d in fleet.select("tag:canary,hall-*").devices] == ["hall-1", "hall-2"]
    assert [d.name for d in fleet.select("id:a4cf12,name:l?b").devices] == ["hall-1", "lab"]
    # A fleet made from another's devices.
    again = uota.Fleet(devices=fleet.select("hall-*").devices)
    assert again.devices == fleet.devices[:2]
    assert len(uota.Fleet()) == 0


def test_an_inventory_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    entries = [
        {"name": "a", "host": "127.0.0.1", "port": 2020, "tags": ["canary"], "id": "x1"},
        {"name": "b", "serial": "/dev/ttyUSB0"},
    ]
    path.write_text(json.dumps({"devices": entries}))
    fleet = uota.Fleet.load(path)
    assert fleet.devices == [uota.FleetDevice(**e) for e in entries]  # type: ignore[arg-type]
    assert uota.Fleet(devices=entries).devices == fleet.devices  # type: ignore[arg-type]
