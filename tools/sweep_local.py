"""Run a W&B sweep file offline: W&B's own sweep engine (the `sweeps` package, the same code the W&B
server runs) proposes each run from the results so far — grid, random or Bayes — and each proposal
runs in-process through `sweep.py`'s pipeline, logged to W&B offline.

    python tools/sweep_local.py configs/sweeps/replacement_probability.yaml --count 8 \\
        [--out outputs/sweeps/NAME] [-- --expand.trainer.accelerator=cpu ...]

Arguments after `--` are added to every run (e.g. tiny settings). Writes results.csv and results.md
(one row per run, best first, best configuration named) into --out, and ends with one more W&B run,
`<sweep>-summary`: the results table, the metric against each swept value as a chart (`sweep/<name>`: a
line over a numeric value, one line per value of a second swept setting; bars over a categorical
one) and the best configuration. Swept values keep their types throughout. `wandb sync OUT/wandb`
uploads every run of the sweep later (the command is printed at the end).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_sweep(path: str | Path) -> dict:
    import sweeps

    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not a readable sweep file ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a sweep file is a YAML mapping (method, metric, parameters, command)")
    problems = sweeps.schema_violations_from_proposed_config(cfg)
    if problems:
        raise ValueError(f"{path} is not a valid W&B sweep: {'; '.join(problems)}")
    metric = cfg.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):  # W&B asks it of Bayes only
        raise ValueError(f"{path}: give the metric to rank the runs by (metric: {{name: ..., goal: ...}})")
    return cfg


def fixed_arguments(cfg: dict) -> dict:
    """--expand-config / --classify-config and fixed stage arguments from the sweep's `command`."""
    command = [str(c) for c in cfg.get("command", [])]
    out = {"expand_config": None, "classify_config": None, "args": []}
    i = 0
    while i < len(command):
        item = command[i]
        if item in {"--expand-config", "--classify-config"}:
            if i + 1 == len(command):
                raise ValueError(f"the sweep's command ends with {item} and no config after it")
            out[item[2:].replace("-", "_")] = command[i + 1]
            i += 2
            continue
        if item.startswith(("--expand.", "--classify.")):
            out["args"].append(item)
        i += 1
    if not out["expand_config"]:
        raise ValueError("the sweep's command must give --expand-config")
    return out


def as_argument(name: str, value) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    return f"--{name}={value}"


def _sort_key(row: dict, metric: str, goal: str):
    value = row.get(metric)
    if value is None:
        return (1, 0.0)
    return (0, -value if goal == "maximize" else value)


def run_sweep(path, count: int, out: Path, extra: list[str]) -> list[dict]:
    import sweeps

    import sweep

    cfg = load_sweep(path)
    fixed = fixed_arguments(cfg)
    metric, goal = cfg["metric"]["name"], cfg["metric"].get("goal", "minimize")
    os.environ.setdefault("WANDB_MODE", "offline")
    runs, rows, details = [], [], []
    for i in range(count):
        proposal = sweeps.next_run(cfg, runs)
        if proposal is None:  # a grid is exhausted
            break
        params = {k: v["value"] for k, v in proposal.config.items()}
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}  # numpy scalars
        print(f"[{i + 1}/{count}] {params}", flush=True)
        args = fixed["args"] + [as_argument(k, v) for k, v in params.items()] + extra
        summary = sweep.run(
            fixed["expand_config"],
            fixed["classify_config"],
            args,
            root=str(out),
            project=f"sweep-{Path(path).stem}",
        )
        value = summary.get(metric)
        done = sweeps.SweepRun(
            name=f"run{i}",
            state=sweeps.RunState.finished,
            config=proposal.config,
            summaryMetrics={metric: value} if value is not None else {},
        )
        runs.append(done)
        rows.append(params | {metric: value})
        details.append(params | summary)
    rows.sort(key=lambda r: _sort_key(r, metric, goal))
    write_results(rows, metric, goal, out, Path(path).name)
    log_summary_run(details, cfg, out, Path(path).stem)
    print(f"W&B offline runs of the sweep in {out / 'wandb'}; upload them with: wandb sync {out / 'wandb'}")
    return rows


def column_names(parameters: list[str]) -> dict[str, str]:
    """Chart column per swept key: its last part ("split_ratio"), longer where two would clash."""
    names = {}
    for key in parameters:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if sum(k.split(".")[-n:] == tail for k in parameters) == 1:
                break
        names[key] = safe_column("_".join(tail))
    return names


def safe_column(name: str) -> str:
    """Only letters, digits and "_": Vega-Lite, which draws W&B's charts, reads "." in a field name as
    nesting ("test/acc" -> "test_acc")."""
    return re.sub(r"\W", "_", name)


def _numeric(values: list) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _distinct(done: list[dict], key: str) -> int:
    return len({repr(d[key]) for d in done})


def sweep_charts(details: list[dict], parameters: list[str], metric: str) -> dict:
    """`sweep/<name>` per swept setting: the metric against its values (W&B charts). A numeric
    setting gets a line, one per value of the one other setting that varies when that one repeats its
    values (K x stage: one line per stage); a categorical one bars of the metric's mean per value."""
    import wandb

    done = [d for d in details if d.get(metric) is not None]
    col, y = column_names(parameters), safe_column(metric)
    charts = {}
    for key in parameters:
        x = col[key]
        varying = [k for k in parameters if k != key and _distinct(done, k) > 1]
        if _numeric([d[key] for d in done]):
            stroke = varying[0] if len(varying) == 1 and _distinct(done, varying[0]) < len(done) else None
            by = [col[stroke]] if stroke else []
            points = sorted(done, key=lambda d: (str(d[stroke]) if stroke else "", d[key]))
            data = [[d[key], d[metric], *([str(d[stroke])] if stroke else [])] for d in points]
            table = wandb.Table(columns=[x, y, *by], data=data)
            title = f"{metric} vs {x}" + (f" per {by[0]}" if by else "")
            charts[f"sweep/{x}"] = wandb.plot.line(table, x, y, stroke=by[0] if by else None, title=title)
        else:
            groups: dict[str, list[float]] = {}
            for d in done:
                groups.setdefault(str(d[key]), []).append(d[metric])
            data = [[v, sum(m) / len(m), len(m)] for v, m in groups.items()]
            table = wandb.Table(columns=[x, y, "runs"], data=data)
            charts[f"sweep/{x}"] = wandb.plot.bar(table, x, y, title=f"{metric} (mean) per {x}")
    return charts


def log_summary_run(details: list[dict], cfg: dict, out: Path, name: str) -> None:
    """A W&B run of the whole sweep: every run's settings and figures as a table (`sweep/results`), the
    charts of `sweep_charts`, the best configuration in the summary (`best/<key>`, typed)."""
    import wandb

    metric, goal = cfg["metric"]["name"], cfg["metric"].get("goal", "minimize")
    parameters = list(cfg["parameters"])
    config = {
        "sweep": name,
        "method": cfg["method"],
        "metric": metric,
        "goal": goal,
        "parameters": parameters,
    }
    run = wandb.init(project=f"sweep-{name}", dir=str(out), name=f"{name}-summary", job_type="sweep-summary",
                     config=config, reinit="finish_previous")  # fmt: skip
    keys = list(dict.fromkeys(k for d in details for k in d))
    col = column_names(parameters)
    columns = [col.get(k) or safe_column(k) for k in keys]
    table = wandb.Table(columns=columns, data=[[d.get(k) for k in keys] for d in details])
    run.log({"sweep/results": table} | sweep_charts(details, parameters, metric))
    ranked = sorted(
        (d for d in details if d.get(metric) is not None), key=lambda d: _sort_key(d, metric, goal)
    )
    if ranked:
        run.summary.update({f"best/{k}": ranked[0][k] for k in [*parameters, metric]})
    run.finish()


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_results(rows: list[dict], metric: str, goal: str, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Sweep {name}: {metric} ({goal})",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    if rows and rows[0].get(metric) is not None:
        best = {k: v for k, v in rows[0].items() if k != metric}
        lines += ["", f"Best: {metric} = {rows[0][metric]:.4f} with {best}"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep")
    parser.add_argument("--count", type=int, default=20, help="most runs (a grid stops when exhausted)")
    parser.add_argument("--out", default=None, help="default: outputs/sweeps/<sweep name>")
    args = parser.parse_args(argv)
    out = Path(args.out or f"outputs/sweeps/{Path(args.sweep).stem}")
    return run_sweep(args.sweep, args.count, out, extra)


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
