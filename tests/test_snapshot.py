"""Behaviour unchanged: every study's ``test`` preset gives the committed numbers (tests/snapshot_presets.py)."""

from __future__ import annotations

import json
import math

import pytest

from snapshot_presets import SNAPSHOT, machine, take


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return take(tmp_path_factory.mktemp("snapshot") / "rep")


@pytest.fixture(scope="module")
def committed():
    return json.loads(SNAPSHOT.read_text())


def _diff(a, b, where="", rel=1e-6) -> list[str]:
    """Where two snapshots differ: keys, lengths, types, or numbers beyond ``rel`` (None: structure only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _diff(a[k], b[k], f"{where}.{k}", rel)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]", rel)]
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and not isinstance(b, bool):
        if rel is None or math.isclose(a, b, rel_tol=rel, abs_tol=1e-9):
            return []
        return [f"{where}: {a!r} vs {b!r}"]
    if rel is None and type(a) is type(b) and not isinstance(a, bool):
        return []  # structure only: strings may carry numbers
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def test_every_study_keeps_its_keys_and_claims(fresh, committed):
    assert sorted(fresh["sections"]) == sorted(committed["sections"])
    for name, sec in committed["sections"].items():
        assert [c["name"] for c in fresh["sections"][name]["claims"]] == [c["name"] for c in sec["claims"]], name
    assert _diff(fresh["sections"], committed["sections"], rel=None) == []


def test_every_study_gives_the_committed_numbers(fresh, committed):
    if fresh["machine"] != committed["machine"]:
        pytest.skip(f"the snapshot was written on {committed['machine']}; this machine is {machine()}: floats "
                    "are compared only on the same CPU and versions (python tests/snapshot_presets.py --write)")
    bad = _diff(fresh["sections"], committed["sections"])
    assert bad == [], "\n".join(bad[:20])


def test_the_comparison_sees_a_changed_number(committed):
    """The guard itself: one number moved by 1e-4 relative, or one key gone, is a difference."""
    import copy

    moved = copy.deepcopy(committed["sections"])
    moved["calpha"]["numbers"]["max_abs_error"] *= 1 + 1e-4
    assert _diff(moved, committed["sections"]) != []
    del moved["calpha"]["numbers"]["max_abs_error"]
    assert _diff(moved, committed["sections"], rel=None) != []
