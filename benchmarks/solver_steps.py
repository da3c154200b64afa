"""Denoising steps vs set quality vs speed, per method: which solver and how many steps keep the quality.

    python benchmarks/solver_steps.py                                   # every method's default rows
    python benchmarks/solver_steps.py --methods txt2img --settings ddim:25 unipc:10 unipc:10:0.0-0.8
    python benchmarks/solver_steps.py --report docs/measurements/solver-steps-2026-12-03

Each row is one method's `configs/expand/<method>.yaml` run through the real CLI on the tiny prior (the
committed concepts, the 5-shot subset; txt2img with the learned tokens), with one denoising setting and
one seed (`data.init_args.seed`: the records' noise and choices; the real subset stays the same), at batch 32
on the CPU. A setting is `solver:steps[:lo-hi]` (solver ddim, dpmpp_2m or unipc; `lo-hi` the guidance
interval as t / T) and, for Diff-II, `ddim:inversion_steps/steps`. For DistDiff and Diff-II + DistDiff the
guidance step M is scaled with the steps so the guidance keeps its timestep (M = 20 of 50 → t ≈ 381).

Per row: the set's oracle faithfulness, diversity and Fréchet distance to 2,000 real test images (the
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

CONCEPTS = "assets/concepts/fashion_mnist-5shot-seed0"
QUALITY = ("faithfulness", "diversity", "frechet_distance")
BETTER = {"faithfulness": 1, "diversity": 1, "frechet_distance": -1}  # the sign of an improvement
# A setting keeps the quality when no figure is worse than the reference's by more than this many of
# the reference's standard deviations over seeds (paired means).
NOISE_BAND = 2.0
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
    config = REPO / "configs/expand" / f"{method}.yaml"
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
    if "concepts:" in config.read_text() or "uses_concepts=true" in " ".join(cli_args):
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


def table(rows: list[dict]) -> str:
    """Per method and setting: means over seeds, and each quality figure's paired difference to the
    method's first setting (mean over the seeds both ran), beside the first setting's std over seeds;
    `held`: no figure worse than the reference's by more than NOISE_BAND of its stds."""
    lines = [
        "| method | setting | seeds | UNet evals / image | images/s | faithfulness | diversity | Fréchet "
        "| held |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        settings = list(dict.fromkeys(r["setting"] for r in mine))
        reference = {r["seed"]: r for r in mine if r["setting"] == settings[0]}
        for setting in settings:
            runs = [r for r in mine if r["setting"] == setting]
            cells, held = [], "reference" if setting == settings[0] else "yes"
            for key in QUALITY:
                mean = statistics.fmean(r[key] for r in runs)
                ref = [r[key] for r in reference.values()]
                spread = statistics.stdev(ref) if len(ref) > 1 else float("nan")
                if setting == settings[0]:
                    cells.append(f"{mean:.3f} (std {spread:.3f})")
                    continue
                paired = [r[key] - reference[r["seed"]][key] for r in runs if r["seed"] in reference]
                delta = statistics.fmean(paired) if paired else float("nan")
                cells.append(f"{mean:.3f} ({delta:+.3f})")
                if not -BETTER[key] * delta <= NOISE_BAND * spread:  # NaN (one seed) is not held
                    held = "no"
            speed = statistics.fmean(r["images_per_s"] for r in runs)
            unet = statistics.fmean(r["unet_per_image"] for r in runs)
            figures = " | ".join(cells)
            head = f"| {method} | {setting} | {len(runs)} | {unet:.0f} | {speed:.2f}"
            lines.append(f"{head} | {figures} | {held} |")
    return "\n".join(lines)


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
    args = parser.parse_args(argv)
    report = Path(args.report) if args.report else None
    done = []
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        if (report / "rows.jsonl").is_file():  # resume: keep the rows measured before
            done = [json.loads(line) for line in (report / "rows.jsonl").read_text().splitlines()]
    rows = list(done)
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
                    row = run_row(method, setting, seed, args, work)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if report is not None:
                        with (report / "rows.jsonl").open("a") as f:
                            f.write(json.dumps(row) + "\n")
    text = table(rows)
    print(text)
    if report is not None:
        (report / "table.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
