"""Manifest: build, sign, verify, tamper, serialize, diff (no device needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import uota
from conftest import STARTER, make_project, sha256_hex


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    files = {
        "main.py": b"print('hi')\n",
        "a.py": b"A = 1\n",
        "a/b.py": b"B = 2\n",
        "lib/util.py": b"def f():\n    return 3\n",
        "data.bin": bytes(range(256)) * 4,
        "notes.txt": b"not code\n",
        ".hidden.py": b"secret = 1\n",
        "config/.ota.secrets.json": b'{"otaPassword": "pw"}',
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_build_hashes_sizes_and_order(tree: Path) -> None:
    m = uota.Manifest.build(tree, version="1.2.3")
    assert m.version == "1.2.3"
    assert m.sig is None
    paths = [p for p, _, _ in m.files]
    # Hidden files and the secrets file are never taken.
    assert ".hidden.py" not in paths
    assert "config/.ota.secrets.json" not in paths
    assert set(paths) == {"main.py", "a.py", "a/b.py", "lib/util.py", "data.bin", "notes.txt"}
    # Sorted by the bytes of path + ":" (so "a.py" comes before "a/b.py").
    assert paths == sorted(paths, key=lambda p: (p + ":").encode())
    assert paths.index("a.py") < paths.index("a/b.py")
    for path, size, sha in m.files:
        data = (tree / path).read_bytes()
        assert size == len(data)
        assert sha == sha256_hex(data)
    assert len(m) == 6
    assert m.total_size == sum(size for _, size, _ in m.files)


def test_build_include_exclude(tree: Path) -> None:
    m = uota.Manifest.build(tree, include=["**/*.py"], exclude=["lib/**"])
    assert [p for p, _, _ in m.files] == ["a.py", "a/b.py", "main.py"]
    top = uota.Manifest.build(tree, include=["*.py"])
    assert [p for p, _, _ in top.files] == ["a.py", "main.py"]


def test_bad_pattern_is_invalid_argument(tree: Path) -> None:
    with pytest.raises(uota.InvalidArgument) as info:
        uota.Manifest.build(tree, include=["a/[b"])
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, uota.UotaError)


def test_sign_verify_and_payload(tree: Path) -> None:
    m = uota.Manifest.build(tree, include=["*.py"], version="2.0.0")
    with pytest.raises(uota.SignatureMismatch):
        m.verify("key")  # unsigned
    m.sign("key")
    assert m.sig is not None and len(m.sig) == 64
    m.verify("key")
    with pytest.raises(uota.SignatureMismatch):
        m.verify("other key")
    payload = m.signing_payload()
    expected = "2.0.0\n" + "\n".join(sorted(f"{p}:{s}" for p, _, s in m.files))
    assert payload == expected.encode()
    import hmac
    import hashlib

    assert m.sig == hmac.new(b"key", payload, hashlib.sha256).hexdigest()


def test_tampered_manifest_fails_verification(tree: Path) -> None:
    m = uota.Manifest.build(tree, version="1.0.0")
    m.sign("k3y")
    doc = json.loads(m.to_json())
    assert doc["sig"] == m.sig

    # A changed file hash.
    tampered = json.loads(m.to_json())
    tampered["files"]["main.py"]["sha256"] = "0" * 64
    bad = uota.Manifest.from_json(json.dumps(tampered))
    with pytest.raises(uota.SignatureMismatch):
        bad.verify("k3y")

    # A changed version.
    tampered = json.loads(m.to_json())
    tampered["version"] = "9.9.9"
    with pytest.raises(uota.SignatureMismatch):
        uota.Manifest.from_json(json.dumps(tampered)).verify("k3y")

    # An added file.
    tampered = json.loads(m.to_json())
    tampered["files"]["evil.py"] = {"size": 1, "sha256": "1" * 64}
    with pytest.raises(uota.SignatureMismatch):
        uota.Manifest.from_json(json.dumps(tampered)).verify("k3y")

    # The untouched one still verifies after a JSON round trip.
    back = uota.Manifest.from_json(m.to_json())
    assert back == m
    back.verify("k3y")


def test_json_round_trip_and_errors(tree: Path) -> None:
    m = uota.Manifest.build(tree, version="3.1")
    doc = json.loads(m.to_json())
    assert doc["version"] == "3.1"
    assert "sig" not in doc
    assert doc["files"]["main.py"] == {"size": 12, "sha256": sha256_hex(b"print('hi')\n")}
    assert uota.Manifest.from_json(m.to_json()) == m
    with pytest.raises(uota.ProtocolError):
        uota.Manifest.from_json("{not json")
    with pytest.raises(uota.ProtocolError):
        uota.Manifest.from_json('{"version": "1"}')
    with pytest.raises(uota.InvalidPath) as info:
        uota.Manifest.from_json(
            json.dumps({"version": "1", "files": {"../etc/passwd": {"size": 1, "sha256": "0" * 64}}})
        )
    assert info.value.path == "../etc/passwd"
    assert isinstance(info.value, ValueError)


def test_manifest_lines(tree: Path) -> None:
    m = uota.Manifest.build(tree, include=["*.py"])
    lines = m.manifest_lines().decode().splitlines()
    assert lines == [f"{sha} {size} {path}" for path, size, sha in m.files]


def test_diff(tree: Path) -> None:
    old = uota.Manifest.build(tree, version="1")
    (tree / "main.py").write_bytes(b"print('changed')\n")
    (tree / "new.py").write_bytes(b"N = 1\n")
    (tree / "notes.txt").unlink()
    new = uota.Manifest.build(tree, version="2")
    d = old.diff(new)
    assert [p for p, _, _ in d["added"]] == ["new.py"]
    assert [p for p, _, _ in d["changed"]] == ["main.py"]
    assert d["removed"] == ["notes.txt"]
    assert set(d["unchanged"]) == {"a.py", "a/b.py", "lib/util.py", "data.bin"}
    assert d["bytes_to_send"] == len(b"print('changed')\n") + len(b"N = 1\n")
    assert new.diff(new)["added"] == [] and new.diff(new)["changed"] == []


def test_for_project_modes(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "127.0.0.1", 2018, "pw", "key")
    full = uota.Manifest.for_project(project)
    fast = uota.Manifest.for_project(project, mode="fast")
    full_paths = {p for p, _, _ in full.files}
    fast_paths = {p for p, _, _ in fast.files}
    assert {"main.py", "app/counter.py", "app/__init__.py", "config/ota.json"} <= fast_paths
    assert fast_paths <= full_paths
    assert "www/index.html" in full_paths and "www/index.html" not in fast_paths
    assert "config/.ota.secrets.json" not in full_paths
    assert full.version == json.loads((STARTER / "config" / "ota.json").read_text())["version"]
    for path, _, sha in full.files:
        if path != "config/ota.json":  # described with the bytes a push sends
            assert sha == sha256_hex((project / path).read_bytes())
    with pytest.raises(uota.InvalidArgument):
        uota.Manifest.for_project(project, mode="sideways")  # type: ignore[arg-type]


def test_missing_project_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(uota.ConfigError) as info:
        uota.Manifest.for_project(tmp_path)
    assert info.value.path.endswith("ota.json")


def test_repr(tree: Path) -> None:
    m = uota.Manifest.build(tree, include=["*.py"], version="1.0")
    assert repr(m) == "Manifest(version='1.0', files=2, bytes=18, signed=False)"
