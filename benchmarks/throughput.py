"""Generation throughput per expansion method, with the wall-time split by stage.

    python benchmarks/throughput.py [--methods diffii txt2img ...] [--images-per-class 10]
                                    [--batch-size 32] [--concepts outputs/concepts/...]

Each method runs its `configs/expand/<method>.yaml` on the committed tiny prior (Fashion-MNIST 5-shot,
the tiny benchmark) through the real CLI path: datamodule, Lightning predict loop and the writer.
Setup (model loading, VAE latents, inversion pool, real features) is timed apart from the predict
loop; inside the loop, forward hooks time the UNet, the VAE and the text encoder, and the rest
(noise, slerp, feature extraction, PNG writing) is "outside": its share of the loop is the time not
spent in UNet and VAE calls (target: under 15%). DistDiff's guidance step (rollout, decode, features
and the backward pass through them) is timed as one stage and counts as model work. Text-encoder and
feature-extractor time outside guidance are shown separately and count as outside.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = [
    "txt2img",
    "real_filter",
    "real_guidance",
    "dafusion",
    "diffaug",
    "realmix",
    "diffmix",
    "diffii",
    "distdiff",
]
DEFAULT_CONCEPTS = "outputs/concepts/fashion_mnist-5shot-seed0"


class StageTimer(Callback):
    """Wall time of the predict loop and of the forward calls of the named modules inside it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._handles, self._open = [], {}
        self._in_guidance = False

    def _sync(self, device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def _hook(self, name: str, module: torch.nn.Module):
        def pre(mod, args):
            self._sync(next(mod.parameters()).device)
            self._open[name] = time.perf_counter()

        def post(mod, args, out):
            self._sync(next(mod.parameters()).device)
            elapsed = time.perf_counter() - self._open.pop(name)
            if not self._in_guidance:  # guidance (forward + backward) is timed as one stage
                self.seconds[name] += elapsed
                self.calls[name] += 1

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def on_predict_start(self, trainer, pl_module):
        stages = {"unet": pl_module.unet, "vae_decode": pl_module.vae.decoder,
                  "vae_encode": pl_module.vae.encoder, "text_encoder": pl_module.text_encoder}  # fmt: skip
        extractor = getattr(pl_module.method, "feature_extractor", None)
        if extractor is not None:
            stages["feature_extractor"] = extractor
        for name, module in stages.items():
            self._hook(name, module)
        guidance = getattr(pl_module.method, "energy_guidance", None)
        if guidance is not None:  # DistDiff: rollouts, decode, features and their backward pass
            original = guidance.apply

            def timed(*args, **kwargs):
                self._in_guidance, start = True, time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.seconds["guidance"] += time.perf_counter() - start
                    self._in_guidance = False

            guidance.apply = timed
            self._restore = lambda: setattr(guidance, "apply", original)
        self._start = time.perf_counter()

    def on_predict_end(self, trainer, pl_module):
        self.seconds["loop"] = time.perf_counter() - self._start
        for h in self._handles:
            h.remove()
        getattr(self, "_restore", lambda: None)()


def run_method(method: str, args, workdir: Path) -> dict:
    import expand

    config = REPO / "configs" / "expand" / f"{method}.yaml"
    cli_args = [
        "--config", str(config), f"--output_dir={workdir / method}",
        f"--trainer.accelerator={args.accelerator}", "--trainer.enable_progress_bar=false",
        f"--data.init_args.images_per_class={args.images_per_class}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.cache_dir={workdir / 'cache' / method}",
    ]  # fmt: skip
    if args.pretrained:
        cli_args.append(f"--model.init_args.pretrained={args.pretrained}")
    if "concepts:" in config.read_text():
        cli_args.append(f"--model.init_args.concepts={args.concepts}")
    t0 = time.perf_counter()
    cli = expand.cli_main(cli_args, run=False)
    timer = StageTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    total = time.perf_counter() - t0
    images = len(cli.datamodule.records)
    s = dict(timer.seconds)
    # guidance is UNet + VAE + extractor work (forward and backward), so it counts as inside
    inside = sum(s.get(k, 0.0) for k in ("unet", "vae_decode", "vae_encode", "guidance"))
    return {
        "method": method, "images": images, "loop_s": s["loop"], "setup_s": total - s["loop"],
        "images_per_s": images / s["loop"], "stages": s, "other_share": 1 - inside / s["loop"],
    }  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--images-per-class", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--pretrained", default=None, help="diffusion model (default: the config's)")
    parser.add_argument("--concepts", default=DEFAULT_CONCEPTS)
    args = parser.parse_args(argv)
    if not (Path(args.concepts) / "concepts.json").is_file() and any(
        "concepts:" in (REPO / "configs/expand" / f"{m}.yaml").read_text() for m in args.methods
    ):
        parser.error(
            f"no concept folder at {args.concepts}: run `python train.py fit --config configs/concept.yaml`"
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.images_per_class} images/class")  # fmt: skip
    print(f"{'method':<14}{'images':>7}{'img/s':>8}{'setup s':>9}{'unet %':>8}{'vae %':>7}{'text %':>7}"
          f"{'feat %':>7}{'guide %':>8}{'outside %':>10}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            row = run_method(method, args, Path(tmp))
            st, loop = row["stages"], row["stages"]["loop"]

            def pct(*names, st=st, loop=loop):
                return 100 * sum(st.get(n, 0.0) for n in names) / loop

            print(f"{method:<14}{row['images']:>7}{row['images_per_s']:>8.2f}{row['setup_s']:>9.1f}"
                  f"{pct('unet'):>8.1f}{pct('vae_decode', 'vae_encode'):>7.1f}{pct('text_encoder'):>7.1f}"
                  f"{pct('feature_extractor'):>7.1f}{pct('guidance'):>8.1f}{100 * row['other_share']:>10.1f}",
                  flush=True)  # fmt: skip
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
