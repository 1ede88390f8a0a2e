"""The numbers of every study's ``test`` preset, run by ``gahb reproduce --preset test`` on one thread.

A refactoring must leave them unchanged: ``tests/test_snapshot.py`` compares a fresh run with the
committed snapshot. An issue that changes results on purpose writes a new snapshot and says so:

    python tests/snapshot_presets.py --write      # tests/snapshots/test_presets.json

Floats are compared to 1e-6 relative only on a machine like the one that wrote the snapshot (same
CPU model, torch and numpy): another CPU's vector units round differently, and a few training
steps amplify that, so elsewhere only the structure (every key, every claim name) is compared.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("snapshots") / "test_presets.json"
# keys whose values say when, where or how long, not what was computed
VOLATILE = ("time", "seconds", "_s", "run_dir", "images_per_s", "wall", "out_dir", "path", "command",
            "environment", "judged")


def machine() -> dict:
    import numpy
    import torch

    from gahb.studies.reproduce import machine_description

    return {"cpu": machine_description(), "arch": platform.machine(), "torch": torch.__version__,
            "numpy": numpy.__version__}


def _strip(obj, root: str):
    if isinstance(obj, dict):
        return {k: _strip(v, root) for k, v in obj.items() if not any(t in k for t in VOLATILE)}
    if isinstance(obj, list):
        return [_strip(v, root) for v in obj]
    if isinstance(obj, str) and root in obj:
        return obj.replace(root, "OUT")
    return obj


def take(out: Path) -> dict:
    """Run every study's test preset into ``out`` and return the snapshot (numbers and claims)."""
    import torch

    from gahb.studies import reproduce as rp

    threads = torch.get_num_threads()
    try:
        doc = rp.reproduce("test", out, threads=1, progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    sections = {}
    for e in doc["sections"]:
        if e["results"] is None:
            continue
        claims = [{k: c.get(k) for k in ("name", "measured", "status")} for c in e["results"]["claims"]]
        sections[e["section"]] = _strip({"numbers": e["results"]["numbers"], "claims": claims}, str(out))
    return json.loads(json.dumps({"machine": machine(), "sections": sections}))  # tuples as the file has them


def main() -> None:
    import tempfile

    if "--write" not in sys.argv[1:]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        snap = take(Path(tmp) / "rep")
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}: sections {sorted(snap['sections'])}")


if __name__ == "__main__":
    main()
