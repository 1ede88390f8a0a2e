"""Write src/gahb/studies/published_reference.json from the committed published study.

    python scripts/update_references.py [docs/results/published/study/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gahb.studies.references import REFERENCE_FILE, build_jacobian_reference, build_sampler_reference
from gahb.utils.io import atomic_write_json


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/published/study/results.json")
    results = json.loads(src.read_text())
    atomic_write_json(REFERENCE_FILE, {"jacobian": build_jacobian_reference(results, str(src)),
                                       "samples": build_sampler_reference(results),
                                       "command": "python " + " ".join(sys.argv)})
    print(f"wrote {REFERENCE_FILE}")


if __name__ == "__main__":
    main()
