"""Denoising steps vs set quality vs speed, per method: which solver and how many steps keep the quality.

    python benchmarks/solver_steps.py                                   # every method's default rows
    python benchmarks/solver_steps.py --methods txt2img --settings ddim:25 unipc:10 unipc:10:0.0-0.8
    python benchmarks/solver_steps.py --report docs/measurements/solver-steps-2026-12-03 --print

Each row is one method's `configs/expand/<method>.yaml` run through the real CLI on the tiny prior (the
committed concepts, the 5-shot subset; txt2img with the learned tokens), with one denoising setting and
one seed (`data.init_args.seed`: the records' noise and choices; the real subset stays the same), at batch 32
on the CPU. A setting is `solver:steps[:lo-hi]` (solver ddim, dpmpp_2m or unipc; `lo-hi` the guidance
interval as t / T) and, for Diff-II, `ddim:inversion_steps/steps`. For DistDiff and Diff-II + DistDiff the
guidance step M is scaled with the steps so the guidance keeps its timestep (M = 20 of 50 → t ≈ 381).

Per row: the set's oracle faithfulness, diversity and Fréchet distance to 1,000 real validation images (the
expansion's own `set_metrics.json`), UNet evaluations per image (each sample through the UNet counts once,
so a guided step counts 2), and images/s of the predict loop. The table gives each setting's mean over
the seeds and, for every quality figure, the difference to the first (reference) setting on the same
seeds with the reference's own spread over seeds (std), so "within seed noise" can be read off.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_protocol import method_config, uses_concepts  # noqa: E402

CONCEPTS = "assets/concepts/fashion_mnist-5shot-seed0"
QUALITY = ("faithfulness", "diversity", "frechet_distance")
BETTER = {"faithfulness": 1, "diversity": 1, "frechet_distance": -1}  # the sign of an improvement
# A setting keeps the quality when no figure is worse than the reference's by more than this many of
# the reference's standard deviations over seeds (paired means).
NOISE_BAND = 2.0
# No default below this many sampling steps (half the papers' 25): the defaults also serve SD-1.5, where
# fewer steps are not measured here.
MIN_STEPS = 12
# The reference (the papers' setting, today's default) first, then the candidates.
NOISE_ROWS = ["ddim:25", "ddim:12", "dpmpp_2m:12", "unipc:12", "dpmpp_2m:8", "unipc:8", "unipc:12:0.0-0.8"]
DEFAULT_SETTINGS = {
    "txt2img": NOISE_ROWS,
    "real_filter": ["ddim:25", "dpmpp_2m:12", "unipc:12", "unipc:8"],
    "dafusion": NOISE_ROWS,
    "diffmix": ["ddim:25", "dpmpp_2m:12", "unipc:12", "unipc:8"],
    "distdiff": ["ddim:50", "ddim:24", "dpmpp_2m:24", "unipc:24", "unipc:16", "unipc:24:0.0-0.8"],
    "diffii": ["ddim:25/25", "ddim:12/25", "ddim:12/12", "ddim:8/12", "ddim:8/8"],
    "diffii_distdiff": ["ddim:25/25", "ddim:12/12"],
}
# The guidance step M of the methods with energy guidance, at their papers' step count: scaled with the
# steps, so the guidance keeps its timestep.
GUIDANCE_AT = {"distdiff": (20, 50), "diffii_distdiff": (10, 25)}
# txt2img with the learned tokens: with class names the tiny prior (which knows metaclass words only)
# draws near-random classes, and a quality table of near-chance faithfulness says little.
METHOD_ARGS = {"txt2img": ["--model.init_args.method.uses_concepts=true"]}


class Setting(NamedTuple):  # a NamedTuple, not a dataclass: tools may load this file under another name
    solver: str
    steps: int
    inversion_steps: int | None = None
    interval: tuple[float, float] | None = None

    @classmethod
    def parse(cls, text: str) -> Setting:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"a setting is solver:steps[:lo-hi] or ddim:inversion/steps, got {text!r}")
        inversion, _, steps = parts[1].rpartition("/")
        interval = tuple(float(v) for v in parts[2].split("-")) if len(parts) == 3 else None
        return cls(parts[0], int(steps), int(inversion) if inversion else None, interval)

    def method_args(self, method: str) -> list[str]:
        prefix = "--model.init_args.method."
        args = [f"{prefix}num_inference_steps={self.steps}"]
        if method.startswith("diffii"):
            if self.solver != "ddim":
                raise ValueError("Diff-II inverts and samples with DDIM; give ddim:inversion/steps")
            args.append(f"{prefix}inversion_steps={self.inversion_steps or self.steps}")
        else:
            args.append(f"{prefix}solver={self.solver}")
        if self.interval is not None:
            args.append(f"{prefix}guidance_interval=[{self.interval[0]},{self.interval[1]}]")
        if method in GUIDANCE_AT:
            m, of = GUIDANCE_AT[method]
            args.append(f"{prefix}guidance_steps={round(m * self.steps / of)}")
        return args

    def __str__(self) -> str:
        steps = f"{self.inversion_steps}/{self.steps}" if self.inversion_steps else str(self.steps)
        interval = f" cfg∈[{self.interval[0]:g},{self.interval[1]:g}]" if self.interval else ""
        return f"{self.solver} {steps}{interval}"


def run_row(method: str, setting: Setting, seed: int, args, work: Path) -> dict:
    import expand
    from benchmarks.throughput import StageTimer

    out = work / method / str(setting).replace(" ", "_").replace("/", "-") / f"seed{seed}"
    config = method_config(method)
    cli_args = [
        "--config",
        str(config),
        f"--output_dir={out}",
        f"--data.init_args.seed={seed}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--data.init_args.images_per_class={args.images_per_class}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.cache_dir={work / 'cache' / method}",
        *setting.method_args(method),
        *METHOD_ARGS.get(method, []),
    ]
    if uses_concepts(config) or "uses_concepts=true" in " ".join(cli_args):
        cli_args.append(f"--model.init_args.concepts={CONCEPTS}")
    cli = expand.cli_main(cli_args, run=False)
    timer = StageTimer()
    cli.trainer.callbacks.append(timer)
    start = time.perf_counter()
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    wall = time.perf_counter() - start
    images = len(cli.datamodule.records)
    metrics = json.loads((out / "set_metrics.json").read_text())["oracle"]
    return {
        "method": method,
        "setting": str(setting),
        "seed": seed,
        "images": images,
        "unet_per_image": timer.unet_samples / images,
        "images_per_s": images / timer.seconds["loop"],
        "wall_s": wall,
        **{k: metrics[k] for k in QUALITY},
    }


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per method and setting: means over seeds; for each quality figure the paired difference
    to the method's first (reference) setting over the seeds both ran, in units of the reference's std
    over seeds too (`worse`: positive when worse); `held`: no figure worse by more than NOISE_BAND stds."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        settings = list(dict.fromkeys(r["setting"] for r in mine))
        reference = {r["seed"]: r for r in mine if r["setting"] == settings[0]}
        for setting in settings:
            runs = [r for r in mine if r["setting"] == setting]
            entry = {
                "method": method,
                "setting": setting,
                "steps": int(setting.split()[1].split("/")[-1]),
                "reference": setting == settings[0],
                "seeds": len(runs),
                "unet_per_image": statistics.fmean(r["unet_per_image"] for r in runs),
                "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
                "held": True,
                "worst": 0.0,
            }
            for key in QUALITY:
                ref = [r[key] for r in reference.values()]
                spread = statistics.stdev(ref) if len(ref) > 1 else float("nan")
                paired = [r[key] - reference[r["seed"]][key] for r in runs if r["seed"] in reference]
                delta = statistics.fmean(paired) if paired else float("nan")
                worse = -BETTER[key] * delta / spread if spread else float("nan") if spread != spread else 0.0
                if spread == 0 and -BETTER[key] * delta > 0:  # no spread: any worsening counts
                    worse = float("inf")
                entry[key] = {"mean": statistics.fmean(r[key] for r in runs), "std": spread, "delta": delta}
                entry["held"] &= worse <= NOISE_BAND  # NaN (one seed, no spread) is not held
                off = abs(delta / spread) if spread else 0.0 if delta == 0 else float("inf")
                entry["worst"] = max(entry["worst"], off)
            out.append(entry)
    return out


def choose(entries: list[dict]) -> dict[str, str]:
    """The default per method: of the settings that held with at most half the reference's UNet
    evaluations and at least MIN_STEPS sampling steps, the one with the fewest evaluations; ties go to
    the one closest to the reference (the smallest largest deviation, in reference stds)."""
    chosen = {}
    for method in dict.fromkeys(e["method"] for e in entries):
        mine = [e for e in entries if e["method"] == method]
        budget = 0.5 * next(e for e in mine if e["reference"])["unet_per_image"]
        fit = [e for e in mine if not e["reference"] and e["held"] and e["steps"] >= MIN_STEPS]
        fit = [e for e in fit if e["unet_per_image"] <= budget]
        if fit:
            chosen[method] = min(fit, key=lambda e: (round(e["unet_per_image"], 6), e["worst"]))["setting"]
    return chosen


def table(rows: list[dict]) -> str:
    """The summary as a Markdown table; `held` says `chosen` for the default `choose` picks."""
    entries = summarise(rows)
    chosen = choose(entries)
    lines = [
        "| method | setting | seeds | UNet evals / image | images/s | faithfulness | diversity | Fréchet "
        "| held |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e["reference"]:
            cells = [f"{e[k]['mean']:.3f} (std {e[k]['std']:.3f})" for k in QUALITY]
            held = "reference"
        else:
            cells = [f"{e[k]['mean']:.3f} ({e[k]['delta']:+.3f})" for k in QUALITY]
            held = "yes, chosen" if chosen.get(e["method"]) == e["setting"] else "yes"
            held = held if e["held"] else "no"
        speed = f"{e['unet_per_image']:.0f} | {e['images_per_s']:.2f}"
        head = f"| {e['method']} | {e['setting']} | {e['seeds']} | {speed}"
        lines.append(f"{head} | {' | '.join(cells)} | {held} |")
    return "\n".join(lines)


ROWS_FILE = "rows.jsonl"  # one measured row per line, appended as each is measured (the resume point)


def run_settings(args) -> dict:
    """The settings a row's figures depend on besides its method, setting and seed."""
    return {"images_per_class": args.images_per_class, "batch_size": args.batch_size}


def measured_rows(path: Path, settings: dict) -> list[dict]:
    """The rows of an earlier run of the same settings; a line that is not a row, or a row measured with
    other settings, is an error naming its line. (A final line cut short by a crash is left out.)"""
    from diffexpand.manifest import manifest_lines, parse_manifest_line

    rows = []
    for number, line in manifest_lines(path):
        try:
            row = parse_manifest_line(line)
        except ValueError as err:
            raise ValueError(f"{path} line {number}: {err}; delete that line to measure it again") from None
        if missing := [key for key in ("method", "setting", "seed") if key not in row]:
            raise ValueError(f"{path} line {number}: lacks {', '.join(missing)}; delete that line")
        made = {key: row.get(key, value) for key, value in settings.items()}  # rows before these keys: as now
        if made != settings:
            raise ValueError(f"{path} line {number} was measured with {made}, this run asks for {settings}: "
                             "give this run another --report")  # fmt: skip
        rows.append(row)
    return rows


def append_row(path: Path, row: dict) -> None:
    """One row appended whole and on disk before the next is measured (a torn last line is cut first)."""
    from diffexpand.manifest import append_lines

    append_lines(path, [row])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument(
        "--settings", nargs="+", default=None, help="rows for every method given (first: reference)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--images-per-class", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", default=None, help="folder for rows.jsonl and table.md")
    parser.add_argument("--workdir", default=None, help="where the sets go (default: a temporary folder)")
    parser.add_argument("--print", action="store_true", help="print --report's table only")
    args = parser.parse_args(argv)
    report = Path(args.report) if args.report else None
    done = []
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        if (report / ROWS_FILE).is_file():  # resume: keep the rows measured before
            done = measured_rows(report / ROWS_FILE, run_settings(args))
    rows = list(done)
    if args.print:
        print(table(rows))
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        for method in args.methods:
            for text in args.settings or DEFAULT_SETTINGS[method]:
                setting = Setting.parse(text)
                for seed in args.seeds:
                    if any(
                        (r["method"], r["setting"], r["seed"]) == (method, str(setting), seed) for r in done
                    ):
                        continue
                    row = run_row(method, setting, seed, args, work) | run_settings(args)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if report is not None:
                        append_row(report / ROWS_FILE, row)
    text = table(rows)
    print(text)
    if report is not None:
        (report / "table.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
