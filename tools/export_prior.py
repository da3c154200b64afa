"""Export a prior run's checkpoint as a diffusers folder, e.g. to look at a run that is still training.

    python tools/export_prior.py runs/prior-v2/checkpoints/last.ckpt outputs/prior-v2-snapshot
    python tools/evaluate_prior.py --prior outputs/prior-v2-snapshot --realism-n 500

Writes what a finished run writes at its end (the EMA weights, training_info.json with the steps trained
so far, the attribute captioner's thresholds for a run with attribute captions). The checkpoint is read
with `weights_only=True` (no pickled code runs); one of another kind is refused with the file named.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def export_checkpoint(checkpoint: Path, out: Path, data_root: Path | None = None) -> Path:
    from diffexpand.models.identity import read_checkpoint

    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a file (a checkpoint of the prior trainer)")
    saved = read_checkpoint(checkpoint, "export another checkpoint")
    hparams = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    if not isinstance(hparams, dict) or not isinstance(saved.get("state_dict"), dict):
        raise ValueError(f"{checkpoint} is not a checkpoint of the prior trainer (lightning_modules/prior)")
    module = _trainer_of(checkpoint, hparams)
    state = saved["state_dict"]
    module.on_load_checkpoint(saved)  # the defaults it gives checkpoints of older versions
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint}: its weights do not fit its own settings ({err})") from err
    if int(module.ema_unet.n_averaged) == 0:
        raise ValueError(
            f"{checkpoint} was saved before the first UNet step: there are no trained UNet weights to "
            "export yet; export a later checkpoint"
        )
    module.hparams.init_from = hparams.get("init_from")  # recorded in training_info.json as it was
    data = saved.get("datamodule_hyper_parameters")
    data = data if isinstance(data, dict) else {}
    batch_size = data.get("batch_size")
    return module.export(
        out,
        global_step=_whole_number(checkpoint, "global_step", saved.get("global_step", 0), 0, None),
        batch_size=batch_size if isinstance(batch_size, int) else None,
        captioner=_captioner(checkpoint, data, data_root),
    )


def _whole_number(checkpoint: Path, name: str, value, low: int, high: int | None) -> int:
    """A count the checkpoint records, checked: a whole number within [low, high]."""
    fits = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not fits or (high is not None and value > high):
        within = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{checkpoint}: {name} is {value!r}, not a whole number {within}")
    return value


def _trainer_of(checkpoint: Path, hparams: dict):
    """The trainer the checkpoint's settings describe; settings this version does not know are refused
    with their names (LightningCLI's own `_class_path` entries are not settings)."""
    import inspect
    from dataclasses import fields

    from diffexpand.models.tiny import TinySDConfig
    from lightning_modules.prior import TinyPriorTrainer

    known = set(inspect.signature(TinyPriorTrainer.__init__).parameters) - {"self"}
    settings = {k: v for k, v in hparams.items() if not k.startswith("_")}
    stack = settings.get("stack") or {}
    stack_known = {f.name for f in fields(TinySDConfig)}
    unknown = sorted(set(settings) - known) + sorted(
        f"stack.{k}" for k in (stack if isinstance(stack, dict) else {}) if k not in stack_known
    )
    if unknown or not isinstance(stack, dict | TinySDConfig):
        raise ValueError(
            f"{checkpoint}: settings this version of the prior trainer does not know: {unknown or ['stack']}"
        )
    stack = TinySDConfig(**stack) if isinstance(stack, dict) else stack
    # init_from only says where the run started; its weights are already in this checkpoint.
    try:
        return TinyPriorTrainer(**(settings | {"stack": stack, "init_from": None}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{checkpoint}: its settings do not build a prior trainer ({err})") from err


def _captioner(checkpoint: Path, data: dict, data_root: Path | None):
    """The attribute captioner of a run with attribute captions (None for other captions), fitted on the
    Fashion-MNIST training split found under `data_root` (else where the project looks by default): never
    at a path the checkpoint names, which could lie anywhere."""
    if data.get("caption") != "attributes":
        return None
    from datamodules.fashion_mnist import training_split_captioner

    size = _whole_number(checkpoint, "the data's image_size", data.get("image_size", 32), 8, 512)
    return training_split_captioner(str(data_root) if data_root else None, size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a prior run (train.py fit)")
    parser.add_argument("out", type=Path, help="the folder to write (diffusers layout)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="Fashion-MNIST for the attribute captioner's thresholds (default: where training finds it)",
    )
    args = parser.parse_args(argv)
    print(f"exported to {export_checkpoint(args.checkpoint, args.out, args.data_root)}")


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
