"""The shared method tests, run for every name in the registry (diffusers' SchedulerCommonTest, timm's
`list_models()`): a method gets them by registering. See tests/method_contract.py for what they check."""

from pathlib import Path

import pytest
from method_contract import check_method

from diffexpand.methods import available_methods

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", available_methods())
def test_registered_method_has_a_config(name):
    assert (REPO / "configs/expand" / f"{name}.yaml").is_file(), f"configs/expand/{name}.yaml is missing"


@pytest.mark.parametrize("name", available_methods())
def test_config_runs_resumes_and_ignores_batch_size(name, tiny_sd_dir, tiny_concepts, tmp_path):
    check_method(name, REPO / "configs/expand" / f"{name}.yaml", tmp_path, tiny_sd_dir, tiny_concepts)


# A multistep solver and a guidance interval keep the contract: DA-Fusion mixes SDEdit strengths in one
# batch (several start steps of the solver), DistDiff guides the latent between solver steps.
SOLVER_CASES = {
    "dafusion": [
        "--model.init_args.method.solver=dpmpp_2m",
        "--model.init_args.method.guidance_interval=[0.3,0.9]",
    ],
    "distdiff": ["--model.init_args.method.solver=unipc"],
}


@pytest.mark.parametrize("name", sorted(SOLVER_CASES))
def test_multistep_solvers_keep_the_contract(name, tiny_sd_dir, tiny_concepts, tmp_path):
    config = REPO / "configs/expand" / f"{name}.yaml"
    check_method(name, config, tmp_path, tiny_sd_dir, tiny_concepts, SOLVER_CASES[name])
