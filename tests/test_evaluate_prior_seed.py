"""tools/evaluate_prior.py --seed: another seed is another draw of every sampled figure, and the card says
which draw it is."""

import json

import torch

from diffexpand.data.fashion_mnist import METACLASSES
from tools import evaluate_prior


def test_seed_reaches_every_sampled_figure_and_the_card(monkeypatch, tmp_path):
    seen = {}

    def metaclass_accuracy(parts, oracle, n, steps, guidance, seed=0):
        seen["metaclass_accuracy"] = seed
        samples = {meta: torch.full((12, 3, 32, 32), float(seed) / 10) for meta in METACLASSES}
        return {meta: 1.0 for meta in METACLASSES}, samples

    def realism(*args, seed=0, **kwargs):
        seen["realism"] = seed
        return {"samples_cfg1": 0.0}

    def attribute_accuracy(*args, seed=0, **kwargs):
        seen["attribute_accuracy"] = seed
        return {}

    # The sampled figures are replaced: this checks where --seed goes, not what the prior draws with it
    # (generate_for_prompt's seeds are tested in test_prior.py). The prior's own loading stays real.
    monkeypatch.setattr(evaluate_prior, "metaclass_accuracy", metaclass_accuracy)
    monkeypatch.setattr(evaluate_prior, "realism", realism)
    monkeypatch.setattr(evaluate_prior, "attribute_accuracy", attribute_accuracy)
    monkeypatch.setattr(evaluate_prior, "vae_reconstruction_psnr", lambda vae, images: 30.0)
    monkeypatch.setattr(evaluate_prior, "orientation_agreement", lambda *args: {})

    result = evaluate_prior.main(["--seed", "3", "--realism-n", "10", "--out", str(tmp_path)])

    assert seen == {"metaclass_accuracy": 3, "realism": 3, "attribute_accuracy": 3}
    assert result["seed"] == 3
    assert json.loads((tmp_path / "quality.json").read_text())["seed"] == 3
