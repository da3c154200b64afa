"""A concept folder is checked against the prior it is applied to: the prior's identity (a content
fingerprint) recorded when learning and compared when expanding; embedding files checked by name and
shape before anything changes."""

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffexpand.concepts import ConceptFolderError, PriorMismatchError, apply_concepts, read_concepts
from diffexpand.models import load_sd_components
from diffexpand.models.identity import model_fingerprint, model_identity
from diffexpand.paths import DEFAULT_PRIOR, REPO_ROOT

COMMITTED = REPO_ROOT / "assets/concepts/fashion_mnist-5shot-seed0"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
LEARN = "python train.py fit --config configs/concept.yaml"


def _copy_prior(tmp_path, name="prior"):
    return shutil.copytree(DEFAULT_PRIOR, tmp_path / name)


def _perturb_one_weight(prior, relative=UNET_WEIGHTS):
    """Prior B: the same architecture and files, one number of one tensor changed."""
    state = load_file(prior / relative)
    name = sorted(state)[0]
    state[name].view(-1)[0] += 1e-3
    save_file(state, prior / relative, metadata={"format": "pt"})


def _unchanged(parts, vocabulary: int) -> bool:
    return len(parts.tokenizer) == vocabulary and not getattr(parts.unet, "peft_config", None)


def test_committed_concepts_record_the_committed_prior_and_are_accepted_on_it():
    recorded = read_concepts(COMMITTED)
    assert recorded.base_model == "assets/tiny-fashion-prior-v3"
    assert recorded.base_fingerprint == model_fingerprint(DEFAULT_PRIOR)
    parts = load_sd_components(DEFAULT_PRIOR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a "cannot be checked" warning
        apply_concepts(parts, COMMITTED, class_names=recorded.class_names)
    assert "<class_9>_3" in parts.tokenizer.get_vocab()


def test_concepts_learned_on_one_prior_are_refused_on_another_of_the_same_architecture(tmp_path):
    other = _copy_prior(tmp_path, "prior-b")
    _perturb_one_weight(other)
    parts = load_sd_components(other)
    vocabulary = len(parts.tokenizer)
    with pytest.raises(PriorMismatchError) as err:
        apply_concepts(parts, COMMITTED)
    message = str(err.value)
    learned, given = read_concepts(COMMITTED).base_fingerprint, model_fingerprint(other)
    assert (
        str(COMMITTED) in message and "'assets/tiny-fashion-prior-v3'" in message
    )  # the prior it was learned on
    assert str(other.resolve()) in message  # and the one given
    assert learned.split(":")[1][:16] in message and given.split(":")[1][:16] in message
    assert LEARN in message and f"--model.init_args.pretrained={other.resolve()}" in message
    assert _unchanged(parts, vocabulary)


def test_a_copy_of_the_prior_with_another_card_is_the_same_prior(tmp_path):
    copy = _copy_prior(tmp_path, "somewhere-else")
    (copy / "README.md").write_text("# a rewritten model card\n")
    (copy / "samples.png").unlink()
    (copy / "quality.json").write_text("{}")
    assert model_fingerprint(copy) == model_fingerprint(DEFAULT_PRIOR)
    apply_concepts(load_sd_components(copy), COMMITTED)  # accepted


def test_a_replaced_prior_of_the_same_name_is_refused_with_the_command_to_relearn(tmp_path):
    """What happens when the committed prior is replaced by a retrained prior: same name, other
    weights."""
    prior = _copy_prior(tmp_path)
    concepts = shutil.copytree(COMMITTED, tmp_path / "concepts")
    meta = json.loads((concepts / "concepts.json").read_text())
    meta["base_model"]["name"] = model_identity(prior).name
    (concepts / "concepts.json").write_text(json.dumps(meta))
    apply_concepts(load_sd_components(prior), concepts)  # before: accepted
    _perturb_one_weight(prior, "text_encoder/model.safetensors")  # "retrained"
    with pytest.raises(PriorMismatchError, match="the same name, other weights") as err:
        apply_concepts(load_sd_components(prior), concepts)
    assert LEARN in str(err.value)


def test_a_concepts_json_naming_another_base_model_is_refused(tmp_path):
    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    meta = json.loads((folder / "concepts.json").read_text())
    meta["base_model"] = {
        "name": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "fingerprint": "sd-files-v1:" + "7" * 64,
    }
    (folder / "concepts.json").write_text(json.dumps(meta))
    parts = load_sd_components(DEFAULT_PRIOR)
    vocabulary = len(parts.tokenizer)
    with pytest.raises(
        PriorMismatchError, match=r"learned on the prior 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
    ):
        apply_concepts(parts, folder)
    assert _unchanged(parts, vocabulary)


def test_the_concept_learner_records_the_prior_it_learned_on(tiny_concepts, tiny_sd_dir):
    concepts = read_concepts(tiny_concepts)
    assert concepts.base_fingerprint == model_fingerprint(tiny_sd_dir)
    assert concepts.base_model == str(tiny_sd_dir.resolve())
    with pytest.raises(PriorMismatchError, match=str(tiny_concepts)):
        apply_concepts(load_sd_components(DEFAULT_PRIOR), tiny_concepts)  # another prior


def test_a_folder_without_a_fingerprint_warns_and_migrate_records_it(tmp_path):
    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    committed_text = (COMMITTED / "concepts.json").read_text()
    meta = json.loads(committed_text)
    meta["base_model"] = "assets/tiny-fashion-prior-v3"  # as written before the fingerprint was recorded
    (folder / "concepts.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"does not record the fingerprint .* cannot be checked"):
        apply_concepts(load_sd_components(DEFAULT_PRIOR), folder)

    from diffexpand.concepts.migrate import main

    main([str(folder), "--prior", "assets/tiny-fashion-prior-v3"])
    assert (folder / "concepts.json").read_text() == committed_text
    for path in COMMITTED.rglob("*.safetensors"):
        assert (folder / path.relative_to(COMMITTED)).read_bytes() == path.read_bytes()
    other = _copy_prior(tmp_path, "prior-b")
    _perturb_one_weight(other)
    with pytest.raises(PriorMismatchError, match="left as it is"):  # a recorded prior is never replaced
        main([str(folder), "--prior", str(other)])
    assert (folder / "concepts.json").read_text() == committed_text


def test_a_hub_id_is_fingerprinted_through_its_cached_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-prior"
    shutil.copytree(DEFAULT_PRIOR, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identity = model_identity("someone/tiny-prior")
    assert identity.name == "someone/tiny-prior" and identity.fingerprint == model_fingerprint(DEFAULT_PRIOR)
    assert model_identity("someone/not-downloaded") is None


@pytest.fixture(scope="module")
def width():
    return load_sd_components(DEFAULT_PRIOR).text_encoder.config.hidden_size


EMBEDDING_CASES = {
    "width": (
        lambda w: {"<class_3>": torch.zeros(4, 7)},
        r"rows are 7 wide, but the text encoder's embeddings are {w} wide",
    ),
    "token count": (
        lambda w: {"<class_3>": torch.zeros(2, w)},
        r"has 2 row\(s\), but concepts.json lists 4 tokens for class 3",
    ),
    "tensor name": (lambda w: {"class_3": torch.zeros(4, w)}, r"no tensor named '<class_3>'"),
}


@pytest.mark.parametrize("case", list(EMBEDDING_CASES))
def test_a_wrong_embedding_file_is_named_with_the_expected_shape_before_the_tokenizer_changes(
    case, width, tmp_path
):
    make, problem = EMBEDDING_CASES[case]
    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    path = folder / "embeddings/class_3.safetensors"
    save_file(make(width), path)
    parts = load_sd_components(DEFAULT_PRIOR)
    vocabulary = len(parts.tokenizer)
    with pytest.raises(ConceptFolderError, match=problem.format(w=width)) as err:
        apply_concepts(parts, folder)
    message = str(err.value)
    assert str(path) in message and f"Expected '<class_3>' of shape (4, {width})" in message
    assert str(tuple(make(width).popitem()[1].shape)) in message  # what was found
    assert _unchanged(parts, vocabulary)


def test_the_fingerprint_ignores_how_configs_were_written_but_not_what_they_say(tmp_path):
    prior = _copy_prior(tmp_path)
    config = prior / "text_encoder/config.json"
    values = json.loads(config.read_text())
    config.write_text(json.dumps(values | {"dtype": "float16", "transformers_version": "9.9.9"}))  # a re-save
    assert model_fingerprint(prior) == model_fingerprint(DEFAULT_PRIOR)
    config.write_text(json.dumps(values | {"layer_norm_eps": 1e-6}))
    assert model_fingerprint(prior) != model_fingerprint(DEFAULT_PRIOR)


def test_large_weight_files_are_fingerprinted_by_sample(tmp_path, monkeypatch):
    from diffexpand.models import identity

    monkeypatch.setattr(identity, "FULL_HASH_LIMIT", 2**16)  # every weights file counts as large here
    monkeypatch.setattr(identity, "SAMPLE_BYTES", 2**12)
    prior = _copy_prior(tmp_path)
    weights = prior / UNET_WEIGHTS
    assert identity.file_digest(weights).startswith("sampled-")
    assert model_fingerprint(prior) == model_fingerprint(DEFAULT_PRIOR)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the last chunk is among the samples
    weights.write_bytes(bytes(data))
    assert model_fingerprint(prior) != model_fingerprint(DEFAULT_PRIOR)


def test_evaluate_concepts_loads_the_prior_once_and_refuses_another_one(tiny_concepts, tmp_path):
    """--prior picks the model to measure on; concepts learned on another prior are refused before any
    image is drawn."""
    from tools.evaluate_concepts import main as evaluate

    out = str(tmp_path / "q")
    with pytest.raises(ValueError, match="learned on"):
        evaluate([str(tiny_concepts), "--prior", str(DEFAULT_PRIOR), "--out", out])
    assert not (tmp_path / "q").exists()
    result = evaluate([str(tiny_concepts), "--n", "1", "--steps", "2", "--out", out])
    assert list(result["per_class"]) == read_concepts(tiny_concepts).class_names
    assert "metaclass_prompt_base_model_mean" in result and (tmp_path / "q/samples.png").is_file()
