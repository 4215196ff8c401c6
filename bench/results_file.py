"""One way for every bench to write bench/results/<name>.json: the figures plus when and where."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, **figures: Any) -> Path:
    doc = {"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"python": platform.python_version(), "cpu": platform.machine()}, **figures}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return out
