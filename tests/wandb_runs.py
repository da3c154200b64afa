"""Reading W&B offline runs back in tests: an offline run writes no config.yaml or wandb-summary.json
(wandb.Api needs the server), only its transaction log (`run-<id>.wandb`) and media files; W&B's own
reader of that log, `wandb leet inspect --summary --json`, gives the config, summary and name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def read_run(run_dir: Path) -> dict:
    """{"config": {key: value}, "summary": {...}, "name": ..., ...} of one offline run folder."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)]
    state = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    # older clients wrap each config value as {"value": v}
    state["config"] = {
        k: (v["value"] if isinstance(v, dict) and set(v) == {"value"} else v)
        for k, v in state["config"].items()
    }
    return state


def offline_runs(wandb_dir: Path) -> dict[str, dict]:
    """Every offline run under a `wandb/` folder, by run folder name."""
    return {d.name: read_run(d) for d in sorted(Path(wandb_dir).glob("offline-run-*"))}


def table(run_dir: Path, summary: dict, key: str) -> dict:
    """The {"columns", "data"} of the table a chart or table logged under `key` wrote."""
    entry = summary[f"{key}_table"] if f"{key}_table" in summary else summary[key]
    return json.loads((Path(run_dir) / "files" / entry["path"]).read_text())
