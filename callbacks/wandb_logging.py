"""What the loggers (W&B above all) get besides the metrics:

- `LoggerSaveConfigCallback` (the save-config callback of train.py and expand.py): the resolved config,
  secrets masked, as the run's only hyper-parameters — flattened to the dotted LightningCLI keys
  (`data.init_args.p`), each once, with its type;
- `SyntheticSamplesLogger`: per synthetic set, a contact sheet with class names and the set's figures
  from `set_metrics.json` (`synthetic/<folder>/faithfulness` …);
- `TestPlotsLogger`: per-class test accuracy (bar chart) and the confusion matrix, with class names.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from jsonargparse import Namespace
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from diffexpand.classification.metrics import accuracy_per_class_from_confusion
from diffexpand.preview import contact_sheet
from diffexpand.redact import redact

# Key prefix of the logged config. A sweep run holds two stages (sweep.py): the expander's settings go
# under "expand.", the classifier's under "classify." — the names the sweep's own parameters have — so
# a swept value and the stage's resolved value are one key, not two.
_CONFIG_PREFIX: ContextVar[str] = ContextVar("diffexpand_config_prefix", default="")


@contextlib.contextmanager
def config_prefix(prefix: str) -> Iterator[None]:
    """Log the resolved config of the runs started inside the block under `<prefix>.<key>`."""
    token = _CONFIG_PREFIX.set(f"{prefix}." if prefix else "")
    try:
        yield
    finally:
        _CONFIG_PREFIX.reset(token)


def flat_config(config: Namespace | dict, prefix: str = "") -> dict:
    """{"data": {"init_args": {"p": 0.5}}} -> {"data.init_args.p": 0.5}: the keys the command line
    takes (`--data.init_args.p=0.5`) and W&B sweeps name. Lists stay values; leaves keep their type
    (what is not a JSON scalar, e.g. a path, becomes its string). A `dict`-typed setting's entries
    (`data.init_args.real`) are typed too: jsonargparse keeps the text of `--data.init_args.real.shots=2`
    there, so "2" is logged as the number it spells."""
    out = {}
    for key, value in config.items():  # a Namespace yields its leaves with dotted keys already
        name = f"{prefix}{key}"
        if isinstance(value, Namespace):
            out |= flat_config(value, f"{name}.")
        elif isinstance(value, dict):
            out |= {k: _literal(v) for k, v in flat_config(value, f"{name}.").items()}
        else:
            out[name] = _plain(value)
    return out


def without_aliases(params: dict, existing) -> dict:
    """`params` less the settings a run already holds under another spelling: jsonargparse takes
    `model.init_args.method.split_ratio` for `model.init_args.method.init_args.split_ratio`, so a sweep
    (or a command line) may name a setting one way and the resolved config the other. The run keeps
    its own key — the one a sweep's parameter has — and each setting stays one key."""
    taken = {_alias(k) for k in existing if k not in params}
    return {k: v for k, v in params.items() if _alias(k) not in taken}


def _alias(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != "init_args")


def _plain(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _literal(value):
    """Text that spells a number or a boolean ("2", "0.5", "1e-4", "true") as that value."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, bool | int | float):
                return parsed
    return value


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Writes config.yaml and gives every logger the resolved config as its hyper-parameters.

    Lightning would also log the LightningModule's and datamodule's own hyper-parameters (`p`,
    `backbone` …): the same values a second time under other names, so that is switched off.
    config.yaml goes to Lightning's log folder, except under W&B, whose folder (`save_dir`) is where
    its `wandb/` directory is made — the working directory (or $WANDB_DIR), where `wandb sync` looks —
    so there it goes to `default_root_dir`, beside the checkpoints."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        trainer.enable_autolog_hparams = False  # the resolved config below is the one copy
        if self.already_saved:
            return
        # config.yaml and the logged config are written from a copy with secrets masked (leaf by leaf,
        # so every value keeps its type)
        config = self.config.clone()
        for key, value in config.items():
            masked = redact(value, key.rsplit(".", 1)[-1])
            if masked != value:
                config[key] = masked
        self.config = config
        if self.save_to_log_dir:
            self._write_config_file(trainer)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _write_config_file(self, trainer) -> None:
        """Lightning's SaveConfigCallback.setup, with the folder chosen as the class docstring says."""
        if trainer.loggers and isinstance(trainer.loggers[0], WandbLogger):
            folder = str(trainer.default_root_dir)
        else:
            folder = trainer.log_dir  # broadcasts: every rank must ask
        path = os.path.join(folder, self.config_filename)
        fs = get_filesystem(folder)
        if not self.overwrite:
            exists = trainer.strategy.broadcast(fs.isfile(path) if trainer.is_global_zero else False)
            if exists:
                raise RuntimeError(
                    f"{path} exists: delete it, give this run its own folder, or set "
                    'LightningCLI(save_config_kwargs={"overwrite": True})'
                )
        if trainer.is_global_zero:
            fs.makedirs(folder, exist_ok=True)
            # skip_unset=False: the None values too, for an exact rerun
            self.parser.save(
                self.config, path, skip_unset=False, overwrite=self.overwrite, multifile=self.multifile
            )

    def save_config(self, trainer, pl_module, stage: str) -> None:
        # without jsonargparse's bookkeeping (`data.__path__`: the file a part was included from)
        params = flat_config(self.config.clone(with_meta=False), _CONFIG_PREFIX.get())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # it may join a run that already holds settings (a sweep's)
                logger.log_hyperparams(without_aliases(params, logger.experiment.config.keys()))
            else:
                logger.log_hyperparams(params)


def set_figures(folder: str | Path) -> dict[str, float]:
    """The set-level figures of a set's `set_metrics.json` (written by callbacks/set_metrics.py and
    tools/evaluate_synthetic.py), named as that callback names them without its `set/`: faithfulness,
    diversity, frechet_distance, clip_score, lpips_diversity (those measured), and images. Empty
    without the file."""
    from callbacks.set_metrics import summary_figures

    path = Path(folder) / "set_metrics.json"
    if not path.is_file():
        return {}
    result = json.loads(path.read_text())
    figures = {key.split("/", 1)[1]: value for key, value in summary_figures(result).items()}
    return figures | ({"images": result["images"]} if "images" in result else {})


def set_names(folders: list[str]) -> list[str]:
    """A key per set folder: its name, or its path (slashes as "_") where two sets share a name."""
    names = [Path(f).name for f in folders]
    return [
        n if names.count(n) == 1 else str(Path(f)).strip("/").replace("/", "_")
        for n, f in zip(names, folders, strict=True)
    ]


class SyntheticSamplesLogger(Callback):
    """At the start of fit, per synthetic set: its contact sheet (one row per class, named) as the
    image `synthetic/<name>`, and its `set_metrics.json` figures in the run summary as
    `synthetic/<name>/<figure>`, so a classifier run says how good the sets it trained on were; with the
    data module's `synthetic_filter`, also `synthetic/<name>/kept_images` of `synthetic/<name>/images`."""

    def on_fit_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        folders = getattr(dm, "hparams", {}).get("synthetic") or []
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not trainer.is_global_zero or not folders or not loggers:
            return
        class_names = getattr(dm, "class_names", None)
        for folder, name in zip(folders, set_names(list(folders)), strict=True):
            key = f"synthetic/{name}"
            figures = {f"{key}/{k}": v for k, v in set_figures(folder).items()}
            kept = getattr(dm, "filter_kept", {}).get(str(folder))  # keyed by the config's string
            if kept is not None:  # the data module's synthetic_filter cut the set: what it trained on
                figures[f"{key}/kept_images"], figures[f"{key}/images"] = kept
            sheet = contact_sheet(folder, label_rows=True, class_names=class_names)
            for logger in loggers:
                if figures:
                    logger.experiment.summary.update(figures)
                if sheet is not None:
                    logger.log_image(key=key, images=[sheet], caption=[f"{folder}: one row per class"])


class TestPlotsLogger(Callback):
    """After the test: per-class accuracy as a bar chart (`test/per_class_acc`) and the confusion matrix
    (`test/confusion_matrix`), both with class names, from the module's `test_confusion`; named
    `validation/…` when the classifier was evaluated on the validation split."""

    def on_test_end(self, trainer, pl_module) -> None:
        confusion = getattr(pl_module, "test_confusion", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if confusion is None or not loggers or not trainer.is_global_zero:
            return
        names = getattr(trainer.datamodule, "class_names", None) or [str(c) for c in range(len(confusion))]
        plots = confusion_plots(confusion.tolist(), list(names), getattr(pl_module, "eval_split", "test"))
        for logger in loggers:
            logger.experiment.log(plots)


def confusion_plots(confusion: list[list[int]], names: list[str], split: str = "test") -> dict:
    """W&B charts of a confusion matrix (rows: true class, columns: predicted) of the `split` evaluated."""
    import wandb

    per_class = wandb.Table(columns=["class", "accuracy", "images"])
    accuracies = accuracy_per_class_from_confusion(confusion)
    for name, accuracy, row in zip(names, accuracies, confusion, strict=True):
        if accuracy is not None:  # a class absent from the test data has no accuracy
            per_class.add_data(name, accuracy, sum(row))
    cells = [[names[t], names[p], count] for t, row in enumerate(confusion) for p, count in enumerate(row)]
    if len(cells) > wandb.Table.MAX_ROWS:  # e.g. 200 classes: the non-zero cells (at most one per image)
        cells = [cell for cell in cells if cell[2]]
    matrix = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells)
    title = split.capitalize()
    return {
        f"{split}/per_class_acc": wandb.plot.bar(
            per_class, "class", "accuracy", title=f"{title} accuracy per class"
        ),
        # the chart wandb.plot.confusion_matrix makes, from counts the module already has
        f"{split}/confusion_matrix": wandb.plot_table(
            "wandb/confusion_matrix/v1",
            matrix,
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": f"{title} confusion matrix"},
        ),
    }
