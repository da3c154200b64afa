"""Secrets typed into a config never reach saved settings: masked by name, by shape, and by value."""

import json

from diffexpand.manifest import check_run_settings
from diffexpand.redact import MASK, redact


def test_secrets_are_masked_by_name_shape_and_known_value(monkeypatch):
    monkeypatch.setenv("DIFFEXPAND_LLM_API_KEY", "my-private-key-123")
    config = {
        "model": {"api_key": "anything", "hf_token": "abc", "tokens_per_class": 4, "tokenizer": "clip"},
        "notes": ["key sk-ABCDEFGHIJKLMNOPQRSTUV in text", "url?k=my-private-key-123"],
        "suffix_llm": "openai:gpt-4o-mini",
    }
    out = redact(config)
    assert out["model"] == {"api_key": MASK, "hf_token": MASK, "tokens_per_class": 4, "tokenizer": "clip"}
    assert out["notes"] == [f"key {MASK} in text", f"url?k={MASK}"]
    assert out["suffix_llm"] == "openai:gpt-4o-mini"
    assert config["model"]["api_key"] == "anything"  # the caller's config is not changed


def test_run_settings_file_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdefghij")
    check_run_settings(tmp_path, {"method_settings": {"suffix_llm": "openai:m", "api_key": "plain"},
                                  "comment": "sk-live-0123456789abcdefghij"})  # fmt: skip
    text = (tmp_path / "run_settings.json").read_text()
    assert "sk-live" not in text and "plain" not in text
    assert json.loads(text)["method_settings"]["suffix_llm"] == "openai:m"
    # the same settings again are accepted (comparison happens on the masked form)
    check_run_settings(tmp_path, {"method_settings": {"suffix_llm": "openai:m", "api_key": "plain"},
                                  "comment": "sk-live-0123456789abcdefghij"})  # fmt: skip


def test_no_unsafe_deserialisation_in_the_code():
    """Weights load from safetensors or torch.load(weights_only=True); caches are safetensors / JSON."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sources = [p for d in ("diffexpand", "lightning_modules", "datamodules", "callbacks", "tools",
                           "benchmarks") for p in (repo / d).rglob("*.py")]  # fmt: skip
    sources += list(repo.glob("*.py"))
    offending = []
    for path in sources:
        text = path.read_text()
        if re.search(
            r"^\s*import pickle|^\s*from pickle|joblib\.load|np\.load\(.*allow_pickle=True", text, re.M
        ):
            offending.append(str(path))
        for call in re.findall(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text, re.S):
            if "weights_only=True" not in call:
                offending.append(f"{path}: {call}")
    assert offending == []


def test_saved_config_masks_a_secret_that_reached_a_setting(tmp_path, monkeypatch):
    """config.yaml (and the W&B config, written from the same masked copy) never holds a key, even when
    one was pasted into a setting."""
    import train
    from callbacks.wandb_logging import LoggerSaveConfigCallback

    secret = "sk-live-0123456789abcdefghij"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    cli = train.cli_main([
        "--config", "configs/classifier.yaml", "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}", "--data.init_args.synthetic=[]",
        f"--model.init_args.export_path={tmp_path / secret}.safetensors",
    ], run=False)  # fmt: skip
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, LoggerSaveConfigCallback)]
    callback.setup(cli.trainer, cli.model, "fit")
    text = (tmp_path / "config.yaml").read_text()
    assert secret not in text and f"{MASK}.safetensors" in text
    assert "resnet18" in text  # the rest of the config is there
