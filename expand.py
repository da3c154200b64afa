"""Expansion entry point: `python expand.py predict [--config FILE] [--output_dir DIR]`.

With no `--config` it runs the embedded default, Diff-II on the tiny benchmark
(configs/expand/diffii.yaml: Fashion-MNIST 5-shot, committed prior, concepts from configs/concept.yaml).
`--output_dir` is the one place a synthetic set goes; it is printed at the end.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from callbacks.wandb_logging import LoggerSaveConfigCallback
from diffexpand.cli import run_with_clear_errors, silence_known_noise
from diffexpand.methods.catalog import describe_methods
from diffexpand.run_lock import OutputFolderLock, launching_rank

DESCRIPTION = (
    "Generate a synthetic set: python expand.py predict [--config FILE] [--output_dir DIR]. "
    "List the expansion methods with `python expand.py methods`, one method's settings with "
    "`python expand.py methods DiffII`."
)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "expand" / "diffii.yaml"


class ExpandCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """An expander only predicts: `fit`, `validate` and `test` are not offered."""
        return {"predict": LightningCLI.subcommands()["predict"]}

    def parse_arguments(self, parser, args) -> None:
        """Parse `args` (always given: `cli_main` adds the default config to the command line, so
        Lightning's warning about args beside sys.argv does not apply); a misspelled method setting is
        answered with the settings the method accepts."""
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as err:
            print(with_accepted_settings(str(err)), file=sys.stderr)
            sys.exit(2)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--output_dir", default="outputs/synthetic", help="where the synthetic set goes")
        parser.link_arguments("output_dir", "data.init_args.output_dir")

    def before_predict(self) -> None:
        # Images go to disk through the writer; keeping thousands of them in memory too would not fit.
        # (Not a parser default: add_arguments_to_parser runs before the predict arguments are added.)
        predict = self.config_init["predict"]
        if predict.get("return_predictions") is None:
            predict["return_predictions"] = False

    def instantiate_trainer(self, **kwargs):
        from callbacks.image_writer import SyntheticImageWriter
        from callbacks.progress import trainer_callbacks

        # the project's bar (images/s) unless the config names one; none under enable_progress_bar: false
        trainer = super().instantiate_trainer(**{"callbacks": trainer_callbacks(self), **kwargs})
        trainer.callbacks.append(SyntheticImageWriter(self._output_dir()))
        return trainer

    def predict(self, **kwargs) -> None:
        """`trainer.predict`, holding the output folder for the run's lifetime (LightningCLI calls a
        method of the subcommand's name instead of the trainer's when there is one)."""
        if not launching_rank():  # a DDP rank of the run that holds the folder
            self.trainer.predict(**kwargs)
            return
        with OutputFolderLock(self._output_dir()):
            self.trainer.predict(**kwargs)

    def _output_dir(self) -> str:
        return self.config[self.subcommand]["output_dir"] if self.subcommand else self.config["output_dir"]

    def after_predict(self) -> None:
        from callbacks.wandb_run import finish_wandb_runs, wandb_run_lines

        where = wandb_run_lines(self.trainer)  # before W&B closes its run
        finish_wandb_runs(self.trainer)
        if self.trainer.is_global_zero:
            print(f"Synthetic set written to {Path(self._output_dir()).resolve()}")
            print("\n".join(where))


UNKNOWN_SETTING = re.compile(r"Problem with given class_path '([\w.]+)':\s+Option '(\w+)' is not accepted")


def with_accepted_settings(message: str) -> str:
    """`message` plus, when it is about an unknown setting of a class (a method), the accepted ones."""
    found = UNKNOWN_SETTING.search(message)
    if not found:
        return f"error: {message}"
    module, _, name = found.group(1).rpartition(".")
    accepted = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    close = difflib.get_close_matches(found.group(2), accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"error: {message}\n{hint}{name} accepts: {', '.join(accepted)}"


def with_default_config(args: list[str], run: bool = True) -> list[str]:
    """Insert the embedded default config (after `predict` when running a subcommand) unless the user
    gave one. Not a jsonargparse default_config_file: that would merge into every user config and
    leak, e.g., its concept folder into methods that have none."""
    if any(a in {"--config", "-c"} or a.startswith("--config=") for a in args):
        return args
    if not run:
        return ["--config", str(DEFAULT_CONFIG), *args]
    if "predict" not in args:
        return args
    i = args.index("predict") + 1
    return [*args[:i], "--config", str(DEFAULT_CONFIG), *args[i:]]


def show_progress_messages() -> None:
    """Print the core's INFO messages (cache builds) to stderr, once per process."""
    logger = logging.getLogger("diffexpand")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(name)s pid %(process)d] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def cli_main(args: list[str] | None = None, run: bool = True) -> ExpandCLI:
    show_progress_messages()
    args = with_default_config(list(sys.argv[1:] if args is None else args), run)
    return ExpandCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # the resolved config, once, as the W&B run's settings (no config.yaml file: the set's folder
        # records its settings itself)
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"save_to_log_dir": False},
        auto_configure_optimizers=False,  # nothing is trained: no --optimizer / --lr_scheduler
        parser_kwargs={"exit_on_error": False, "description": DESCRIPTION},  # errors reach parse_arguments
        args=args,
        run=run,
    )


if __name__ == "__main__":
    silence_known_noise()
    if sys.argv[1:2] == ["methods"]:
        run_with_clear_errors(lambda: print(describe_methods(sys.argv[2:])))
    else:
        run_with_clear_errors(cli_main)
