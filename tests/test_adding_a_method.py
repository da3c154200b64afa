"""Adding a method is one file: tests/nearest_real_method.py, registered here at run time (it is not
part of the registry users get), passes the same shared method tests as the shipped methods."""

from pathlib import Path

import pytest
from method_contract import check_method

from diffexpand.methods import registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def nearest_real():
    import nearest_real_method  # registering is importing

    yield nearest_real_method.NearestReal
    registry._METHODS.pop("nearest_real")  # other tests see the shipped registry only
    import sys

    sys.modules.pop("nearest_real_method")


def test_a_new_method_with_its_own_input_passes_the_shared_tests(nearest_real, tiny_sd_dir, tmp_path):
    assert "nearest_real" in registry.available_methods()
    config = tmp_path / "nearest_real.yaml"
    config.write_text(
        f"""seed_everything: 0
trainer: {REPO}/configs/expand/base/trainer.yaml
data: {REPO}/configs/expand/base/data.yaml
model:
  class_path: lightning_modules.expander.Expander
  init_args:
    method:
      class_path: nearest_real_method.NearestReal
      init_args:
        weight: 0.5
"""
    )
    check_method("nearest_real", config, tmp_path, tiny_sd_dir)
    assert list((tmp_path / "cache").glob("nearest-real-*.safetensors"))  # the method's own cached input
