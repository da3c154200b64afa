"""Generation throughput per expansion method: images/s, time per stage, the naive loop, MFU.

    python benchmarks/throughput.py                      # tiny prior on CPU, every method, batch 32
    python benchmarks/throughput.py --architecture sd15 --accelerator gpu --real-root DIR
                                                         # SD-1.5 architecture, random weights, 512 px

Each method runs its `configs/expand/<method>.yaml` through the real CLI path (datamodule, Lightning
predict loop, writer) with the Expander's default speed settings (bf16 autocast, channels-last and SDPA
on a GPU; bf16 autocast and, for small latents, eager attention on a CPU with bf16 instructions;
`--compile` adds torch.compile). Per stage:
  setup      model loading and the caches (VAE latents, real features) apart from inversion
  inversion  Diff-II's DDIM inversion pool (built once, in setup)
  denoising  UNet calls in the predict loop (MFU is computed over these)
  guidance   energy guidance (DistDiff, Diff-II + DistDiff): rollouts, decode, features, backward pass
  decode     VAE decoding;  write: PNG encoding + atomic writes + manifest
  outside    the rest of the loop (noise, slerp, text encoder, features outside guidance, Python)
The same run then times a naive loop over a few of the method's images, the way the official
implementations run: one image per call (batch 1), float16 weights with no autocast (float32 on CPU,
where float16 has no fast kernels), the concept LoRA as adapter layers (diffusers' load_lora_weights, not
fused), no channels-last, no compile, one process, and the papers' solver and step count (the overlay
configs/expand/paper/<method>.yaml, for the methods whose default takes fewer steps). `ratio` is the
batched images/s over the naive one; `--paper-rows` also times the batched loop with the papers' steps.
`steady` leaves out the first batch (or image), which pays the one-off costs (kernel selection,
torch.compile's compilation), and the `ratio` after it compares those. On a GPU, MFU = UNet FLOPs
(counted by PyTorch's FlopCounterMode on one forward) / UNet time / the GPU's dense bf16 peak; `peak GiB`
is the most GPU memory allocated in the loop (DistDiff guidance is the largest).

`--architecture sd15` builds Stable Diffusion 1.5's architecture (diffexpand.models.tiny.SD15_ARCHITECTURE)
with random weights (speed does not depend on weight values; nothing is downloaded), a concept folder
with random tokens and a rank-16 LoRA of the same shapes as learned ones, and reads the real images from
`--real-root` (an imagefolder: ROOT/<class>/*.png) resized to 512 px. DistDiff's extractor there (and
Diff-II + DistDiff's) is ResNet-50 (random weights, as in the official code's backbone) and its clustering
agglomerative.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import pstats
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_protocol import method_config  # noqa: E402

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
    "diffii_distdiff",
]
DEFAULT_CONCEPTS = "assets/concepts/fashion_mnist-5shot-seed0"
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
PEAK_BF16_TFLOPS = {
    "H100": 989.4,
    "H200": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer(Callback):
    """Wall time of the predict loop and of the stages inside it (see the module docstring)."""

    def __init__(self, count_syncs: bool = False):
        self.count_syncs = count_syncs
        self.seconds: dict[str, float] = defaultdict(float)
        self.unet_samples = 0
        self.unet_flops_per_sample = None
        self.peak_bytes = None
        self._handles, self._open, self._restore = [], {}, []
        self._in_guidance = False
        self.batch_ends: list[tuple[float, int]] = []  # (time, images) at the end of each batch

    def _hook(self, name: str, module: torch.nn.Module):
        def pre(mod, args, kwargs):
            sync(self.device)
            self._open[name] = time.perf_counter()

        def post(mod, args, kwargs, out):
            sync(self.device)
            elapsed = time.perf_counter() - self._open.pop(name)
            if not self._in_guidance:  # guidance (forward + backward) is timed as one stage
                self.seconds[name] += elapsed
                if name == "denoising":
                    self.unet_samples += (args[0] if args else kwargs["sample"]).shape[0]

        self._handles += [
            module.register_forward_pre_hook(pre, with_kwargs=True),
            module.register_forward_hook(post, with_kwargs=True),
        ]

    def _wrap(self, owner, attribute: str, stage: str, flag_guidance: bool = False):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            sync(self.device)
            self._in_guidance |= flag_guidance
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync(self.device)
                self.seconds[stage] += time.perf_counter() - start
                self._in_guidance &= not flag_guidance

        setattr(owner, attribute, timed)
        self._restore.append(lambda: setattr(owner, attribute, original))

    def on_predict_start(self, trainer, pl_module):
        from callbacks.image_writer import SyntheticImageWriter

        self.device = pl_module.device
        unet = pl_module.unet
        if self.device.type == "cuda":
            self.unet_flops_per_sample = unet_forward_flops(unet, self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        stages = {
            "denoising": unet,
            "decode": pl_module.vae.decoder,
            "encode": pl_module.vae.encoder,
            "text_encoder": pl_module.text_encoder,
        }
        for module in pl_module.method.modules().values():  # a feature extractor
            stages["features"] = module
        for name, module in stages.items():
            self._hook(name, module)
        guidance = getattr(pl_module.method, "energy_guidance", None)
        if guidance is not None:  # PrototypeGuidance: rollouts, decode, features and their backward pass
            self._wrap(guidance, "apply", "guidance", flag_guidance=True)
        for callback in trainer.callbacks:
            if isinstance(callback, SyntheticImageWriter):
                self._wrap(callback, "write_on_batch_end", "write")
        sync(self.device)
        if self.count_syncs:  # implicit syncs (.item(), .cpu(), blocking copies): slows the loop
            torch.cuda.set_sync_debug_mode("warn")
        self._start = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        sync(self.device)
        self.batch_ends.append((time.perf_counter(), len(batch)))

    def steady_images_per_s(self) -> float | None:
        """Images/s after the first batch (which pays one-off costs: kernel selection, compilation):
        the images of batches 2…N over the time from the end of batch 1 to the end of batch N."""
        if len(self.batch_ends) < 2:
            return None
        (first, _), (last, _) = self.batch_ends[0], self.batch_ends[-1]
        return sum(n for _, n in self.batch_ends[1:]) / (last - first)

    def on_predict_end(self, trainer, pl_module):
        if self.count_syncs:
            torch.cuda.set_sync_debug_mode(0)
        sync(self.device)
        self.seconds["loop"] = time.perf_counter() - self._start
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        for handle in self._handles:
            handle.remove()
        for restore in self._restore:
            restore()


@torch.no_grad()
def unet_forward_flops(unet, device) -> float:
    """FLOPs of one UNet forward for one sample (PyTorch's FlopCounterMode: matmuls, convolutions,
    attention), counted on the plain forward even when the module's forward is compiled."""
    from torch.utils.flop_counter import FlopCounterMode

    size, channels = unet.config.sample_size, unet.config.in_channels
    x = torch.zeros(1, channels, size, size, device=device, dtype=unet.dtype)
    t = torch.tensor([500], device=device)
    context = torch.zeros(1, 77, unet.config.cross_attention_dim, device=device, dtype=unet.dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        type(unet).forward(unet, x, t, encoder_hidden_states=context)
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


@contextlib.contextmanager
def timed_function(module, name: str, seconds: dict, stage: str):
    """Time every call of `module.name` (looked up at call time by its users) into seconds[stage]."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def run_method(method: str, args, workdir: Path, setup: dict, naive=False, paper=False) -> dict:
    import expand
    from diffexpand.methods import diffii
    from diffexpand.paths import paper_preset

    tag = f"{method}-naive" if naive else f"{method}-paper" if paper else method
    config = method_config(method)
    per_class = math.ceil(args.naive_images / setup["num_classes"]) if naive else args.images_per_class
    cli_args = [
        "--config",
        str(config),
        f"--output_dir={workdir / tag}",
        f"--trainer.accelerator={args.accelerator}",
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.images_per_class={per_class}",
        f"--data.init_args.batch_size={1 if naive else args.batch_size}",
        f"--data.init_args.cache_dir={workdir / 'cache' / tag}",
        *setup["cli_args"],
        *setup["method_args"].get(method, []),
    ]
    if (naive or paper) and paper_preset(method):  # the official implementations' steps and solver
        cli_args[2:2] = ["--config", str(paper_preset(method))]
    if "concepts:" in config.read_text():
        cli_args.append(f"--model.init_args.concepts={setup['concepts']}")
    if naive:  # the official implementations' way: fp16 weights (fp32 on CPU), batch 1, nothing else
        dtype = "float16" if setup["device"].type == "cuda" else "float32"
        cli_args += [
            f"--model.init_args.dtype={dtype}",
            "--model.init_args.autocast=none",
            "--model.init_args.channels_last=false",
            "--model.init_args.fuse_lora=false",
        ]
    else:
        cli_args += [f"--model.init_args.compile={str(args.compile).lower()}", *args.model_arg]
    setup_seconds: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    with timed_function(diffii, "invert_latents", setup_seconds, "inversion"):
        cli = expand.cli_main(cli_args, run=False)
        timer = StageTimer(count_syncs=args.count_syncs and not naive and setup["device"].type == "cuda")
        cli.trainer.callbacks.append(timer)
        profiler = cProfile.Profile() if args.profile and not naive else None
        with warnings.catch_warnings(record=True) as caught, profiler or contextlib.nullcontext():
            warnings.simplefilter("always")
            cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
        if profiler is not None:  # where the host time goes (e.g. time outside the GPU stages)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    total = time.perf_counter() - t0
    s = dict(timer.seconds) | dict(setup_seconds)
    images = len(cli.datamodule.records)
    row = {
        "method": f"{method}@paper" if paper else method,
        "images": images,
        "batch_size": 1 if naive else args.batch_size,
        "loop_s": s["loop"],
        "setup_s": total - s["loop"] - s.get("inversion", 0.0),
        "images_per_s": images / s["loop"],
        "steady_images_per_s": timer.steady_images_per_s(),
        "stages_s": s,
    }
    inside = sum(s.get(k, 0.0) for k in ("denoising", "decode", "encode", "guidance", "write"))
    row["outside_share"] = 1 - inside / s["loop"]
    peak = peak_tflops(setup["device"], args.peak_tflops)
    if timer.unet_flops_per_sample and s.get("denoising") and peak:
        flops = timer.unet_flops_per_sample * timer.unet_samples
        row["unet_tflops_per_s"] = flops / s["denoising"] / 1e12
        row["mfu"] = row["unet_tflops_per_s"] / peak
        row["unet_gflops_per_sample"] = timer.unet_flops_per_sample / 1e9
    if timer.peak_bytes is not None:
        row["peak_gib"] = timer.peak_bytes / 2**30
    if timer.count_syncs:  # besides the timer's own; a batch needs some (images to the host, records)
        row["implicit_syncs"] = sum("synchroniz" in str(w.message) for w in caught)
        row["batches"] = math.ceil(images / row["batch_size"])
    return row


def prepare_tiny(args, work: Path) -> dict:
    if not (Path(args.concepts) / "concepts.json").is_file():
        sys.exit(f"no concept folder at {args.concepts} (python train.py fit --config configs/concept.yaml)")
    cli_args = [f"--model.init_args.pretrained={args.pretrained}"] if args.pretrained else []
    return {"cli_args": cli_args, "concepts": args.concepts, "num_classes": 10, "method_args": {}}


def prepare_sd15(args, work: Path, device: torch.device) -> dict:
    """Random-weight SD-1.5 in diffusers layout (float16 files), a random concept folder of learned
    shapes, and the real images from --real-root at 512 px."""
    from diffexpand.concepts.io import save_concepts
    from diffexpand.concepts.lora import add_shared_lora, lora_layers_for_saving
    from diffexpand.data.readers import read_dataset
    from diffexpand.models.tiny import SD15_ARCHITECTURE, build_tiny_sd

    if not args.real_root:
        sys.exit("--architecture sd15 needs --real-root: an imagefolder (ROOT/<class>/*.png) of real images")
    real = read_dataset("imagefolder", args.real_root, "train")
    model, concepts = work / "sd15-random", work / "sd15-concepts"
    started = time.perf_counter()
    with torch.device(device):  # random init of SD-sized weights is far quicker on the GPU
        parts = build_tiny_sd(SD15_ARCHITECTURE)
    parts.save_pretrained(model, dtype=torch.float16)
    tokens, width = 4, parts.text_encoder.config.hidden_size
    embeddings = torch.randn(len(real.class_names), tokens, width) * 0.02
    add_shared_lora(parts.unet, rank=16)
    lora = {k: v.detach().cpu() for k, v in lora_layers_for_saving(parts.unet).items()}
    template = "a photo of a {tokens} {metaclass}"
    save_concepts(concepts, embeddings, real.class_names, real.metaclasses, template, str(model), lora)
    del parts
    print(f"built random-weight SD-1.5 and its concept folder in {time.perf_counter() - started:.0f} s")
    # ResNet-50 with random weights saved as a checkpoint: the extractor refuses to run weightless
    import timm
    from safetensors.torch import save_file

    backbone = work / "resnet50-random.safetensors"
    save_file(timm.create_model("resnet50").state_dict(), backbone)
    distdiff_extractor = json.dumps({"kind": "timm", "model_name": "resnet50", "checkpoint": str(backbone)})
    distdiff_args = [
        f"--model.init_args.method.extractor={distdiff_extractor}",
        "--model.init_args.method.clustering=agglomerative",
    ]
    return {
        "cli_args": [
            f"--model.init_args.pretrained={model}",
            "--data.init_args.real.dataset=imagefolder",
            f"--data.init_args.real.root={args.real_root}",
            f"--data.init_args.real.image_size={args.image_size}",
            f"--data.init_args.real.shots={args.shots}",
        ],
        "concepts": str(concepts),
        "num_classes": len(real.class_names),
        "method_args": {"distdiff": distdiff_args, "diffii_distdiff": distdiff_args},
    }


HEADER = (
    f"{'method':<16}{'images':>7}{'img/s':>8}{'naive':>7}{'ratio':>7}{'steady':>8}{'naive':>7}"
    f"{'ratio':>7}{'setup s':>8}{'invert s':>9}"
    f"{'denoise%':>9}{'guide%':>7}{'decode%':>8}{'write%':>7}{'outside%':>9}{'MFU%':>6}"
    f"{'peak GiB':>9}"
)


def format_row(row: dict) -> str:
    s, loop = row["stages_s"], row["loop_s"]

    def pct(name):
        return 100 * s.get(name, 0.0) / loop

    def num(key):
        return row.get(key) or float("nan")

    return (
        f"{row['method']:<16}{row['images']:>7}{row['images_per_s']:>8.2f}"
        f"{num('naive_images_per_s'):>7.2f}{num('ratio'):>7.1f}{num('steady_images_per_s'):>8.2f}"
        f"{num('naive_steady_images_per_s'):>7.2f}{num('steady_ratio'):>7.1f}"
        f"{row['setup_s']:>8.1f}{s.get('inversion', 0.0):>9.1f}{pct('denoising'):>9.1f}"
        f"{pct('guidance'):>7.1f}{pct('decode'):>8.1f}{pct('write'):>7.1f}"
        f"{100 * row['outside_share']:>9.1f}{100 * row.get('mfu', float('nan')):>6.1f}"
        f"{row.get('peak_gib', float('nan')):>9.2f}"
    )


def main(argv=None) -> list[dict]:
    from diffexpand.paths import paper_preset

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--architecture", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--images-per-class", type=int, default=16, help="10 classes x 16 = 5 batches of 32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive-images", type=int, default=10, help="images the naive batch-1 loop makes")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet forward")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        help="an Expander argument for the batched runs, e.g. --model-arg=--model.init_args.attention=eager",
    )
    parser.add_argument("--pretrained", default=None, help="tiny: diffusion model (default: the config's)")
    parser.add_argument("--concepts", default=DEFAULT_CONCEPTS, help="tiny: the concept folder")
    parser.add_argument("--real-root", default=None, help="sd15: imagefolder of real images")
    parser.add_argument("--shots", type=int, default=5, help="sd15: real images per class")
    parser.add_argument("--image-size", type=int, default=512, help="sd15: real image size")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument(
        "--count-syncs",
        action="store_true",
        help="GPU: count implicit host-device syncs in the loop (slows it)",
    )
    parser.add_argument("--profile", type=int, default=0, help="print the N top functions by own time")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument(
        "--paper-rows",
        action="store_true",
        help="also time each method with its papers' denoising (configs/expand/paper/), where it differs",
    )
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.accelerator in {"gpu", "cuda"} else "cpu")
    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(
        f"torch {torch.__version__}, {where}; {args.architecture}, batch {args.batch_size}, "
        f"{args.images_per_class} images/class, naive loop {args.naive_images} images"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup = prepare_sd15(args, work, device) if args.architecture == "sd15" else prepare_tiny(args, work)
        setup["device"] = device
        print(HEADER, flush=True)
        for method in args.methods:
            row = run_method(method, args, work, setup)
            if args.naive_images > 0:
                naive = run_method(method, args, work, setup, naive=True)
                row["naive_images_per_s"] = naive["images_per_s"]
                row["ratio"] = row["images_per_s"] / naive["images_per_s"]
                row["naive_steady_images_per_s"] = naive["steady_images_per_s"]
                if row["steady_images_per_s"] and naive["steady_images_per_s"]:
                    row["steady_ratio"] = row["steady_images_per_s"] / naive["steady_images_per_s"]
            print(format_row(row), flush=True)
            rows.append(row)
            if args.paper_rows and paper_preset(method):
                old = run_method(method, args, work, setup, paper=True)
                if args.naive_images > 0:
                    old["naive_images_per_s"] = naive["images_per_s"]
                    old["ratio"] = old["images_per_s"] / naive["images_per_s"]
                print(format_row(old), flush=True)
                rows.append(old)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "args": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
