"""Committed artifacts (assets/) are defaults, never outputs: no shipped config or tool writes there unless
asked (`make prior`, `make concepts`, `make oracle`, or an explicit --out / output_dir)."""

import argparse
import importlib
import importlib.util
import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
# the keys that say where something is written: trainer and logger folders, checkpoint folders, the
# modules' export folders, synthetic sets, caches
OUTPUT_KEYS = {
    "default_root_dir", "dirpath", "save_dir", "dir", "log_dir", "output_dir", "out", "out_dir",
    "export_path", "cache_dir", "root",
}  # fmt: skip
NOT_WHOLE = {"sweeps", "base", "paper"}
CONFIGS = sorted(c for c in (REPO / "configs").rglob("*.yaml") if not NOT_WHOLE & set(c.parts))


def writes_into_assets(value) -> bool:
    if not isinstance(value, str) or not value:
        return False
    path = Path(value) if Path(value).is_absolute() else REPO / value  # the shells run from the repository
    return path.resolve().is_relative_to(ASSETS)


def output_values(node, where=""):
    """(key path, value) of every output key in a parsed config, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in OUTPUT_KEYS and not isinstance(value, dict | list):
                yield f"{where}.{key}".lstrip("."), value
            yield from output_values(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from output_values(value, f"{where}[{i}]")


def resolved_config(config: Path, *overrides: str) -> dict:
    """The config as its shell resolves it, every class's defaults included (--print_config)."""
    subcommand = "predict" if "expand" in config.parts else "fit"
    shell = importlib.import_module("expand" if subcommand == "predict" else "train")
    printed = io.StringIO()
    with redirect_stdout(printed), pytest.raises(SystemExit) as done:
        shell.cli_main([subcommand, "--config", str(config), *overrides, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(printed.getvalue())


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO)) for c in CONFIGS])
def test_no_shipped_config_writes_into_assets(config, monkeypatch):
    monkeypatch.chdir(REPO)
    found = dict(output_values(resolved_config(config)))
    assert found, "no output keys found: the check would pass vacuously"
    assert not {k: v for k, v in found.items() if writes_into_assets(v)}


def test_sweep_files_write_nowhere_in_assets():
    for sweep in (REPO / "configs/sweeps").glob("*.yaml"):
        text = sweep.read_text()
        assert not [v for _, v in output_values(yaml.safe_load(text)) if writes_into_assets(v)], sweep
        assert "--output_dir=assets" not in text and "output_dir: assets" not in text, sweep


def make_overrides(target: str) -> list[str]:
    """The `--key=value` overrides of the `train.py fit` line of a Makefile target."""
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    fit = next(line for line in recipe.replace("\\\n", " ").splitlines() if "train.py fit" in line)
    return [arg for arg in fit.split() if arg.startswith("--") and "=" in arg]


@pytest.mark.parametrize(
    ("target", "config", "asset"),
    [
        ("prior-v3-cpu", "configs/prior-v3-cpu-stage2.yaml", "tiny-fashion-prior-v3"),
        ("concepts", "configs/concept.yaml", "concepts/fashion_mnist-5shot-seed0"),
        ("oracle", "configs/oracle.yaml", "fashion-oracle"),
        ("clip", "configs/clip.yaml", "tiny-fashion-clip"),
    ],
)
def test_make_targets_refresh_the_committed_assets_only_when_asked(target, config, asset, monkeypatch):
    monkeypatch.chdir(REPO)
    default = resolved_config(REPO / config)["model"]["init_args"]["output_dir"]
    assert default == f"outputs/{asset}"
    asked = resolved_config(REPO / config, *make_overrides(target))  # what `make <target>` runs
    assert writes_into_assets(asked["model"]["init_args"]["output_dir"])  # the check above can fail
    assert (ASSETS / asset).is_dir() and asked["model"]["init_args"]["output_dir"] == f"assets/{asset}"


class _Parser(Exception):
    """Carries a tool's parser out of its main() before anything runs."""


def tool_parsers(monkeypatch):
    scripts = sorted([*(REPO / "tools").glob("*.py"), *(REPO / "benchmarks").glob("*.py"), REPO / "sweep.py"])
    for path in scripts:
        spec = importlib.util.spec_from_file_location(f"_asset_check_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        # registered while it runs, as an import would: a dataclass looks its module up there
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        if hasattr(module, "main"):
            yield path, module


def test_no_tool_argument_defaults_write_into_assets(monkeypatch):
    def capture(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    checked = []
    for path, module in tool_parsers(monkeypatch):
        with pytest.raises(_Parser) as got:
            module.main([])
        parser = got.value.args[0]
        for action in parser._actions:
            if action.dest in OUTPUT_KEYS:
                checked.append((path.name, action.dest))
                assert not writes_into_assets(action.default), f"{path.name} --{action.dest}"
    assert ("evaluate_prior.py", "out") in checked and ("sweep.py", "root") in checked


def test_evaluation_tools_default_to_outputs_not_the_folder_they_measure():
    from diffexpand.paths import DEFAULT_PRIOR

    for name, measured in [
        ("evaluate_prior", DEFAULT_PRIOR),
        ("evaluate_concepts", ASSETS / "concepts/fashion_mnist-5shot-seed0"),
    ]:
        spec = importlib.util.spec_from_file_location(f"_asset_check_{name}", REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = module.default_out(measured)
        assert not writes_into_assets(str(out)) and out.parts[0] == "outputs", (name, out)
