"""Expansion methods: planning draws from each sample's own seed; generation is batch-independent."""

import math
import warnings

import pytest
import torch

from diffexpand.methods import PlanContext, create_method, sample_rng
from diffexpand.methods.diffii import invert_latents, suffix_step_count
from diffexpand.methods.mix import mix_soft_label
from diffexpand.seeding import sample_seed

CTX = PlanContext(
    class_names=["Sandal", "Sneaker", "Ankle boot"],
    metaclasses=["shoe"] * 3,
    source_ids=[["s0", "s1", "s2"], ["k0", "k1"], ["b0"]],
    class_prompts=[f"a photo of a <class_{i}> shoe" for i in range(3)],
    plain_prompts=["a photo of a Sandal", "a photo of a Sneaker", "a photo of a Ankle boot"],
)


def _records(method, n_per_class=2, labels=(0, 1)):
    records = []
    for label in labels:
        for k in range(n_per_class):
            sid = f"c{label}_{k}"
            seed = sample_seed(0, sid)
            records.append({"sample_id": sid, "label": label, "seed": seed}
                           | method.plan(CTX, label, sample_rng(seed)))  # fmt: skip
    return records


def _attach_latents(records, shape=(4, 8, 8)):
    for r in records:
        g = torch.Generator().manual_seed(hash(r["sample_id"]) % 2**31)
        r["source_latent"] = torch.randn(shape, generator=g)
        r["inversion_a"] = torch.randn(shape, generator=g)
        r["inversion_b"] = torch.randn(shape, generator=g)
    return records


@pytest.mark.parametrize(
    "name", ["txt2img", "real_guidance", "dafusion", "diffaug", "realmix", "diffmix", "diffii"]
)
def test_plans_are_a_function_of_the_sample_seed(name):
    method = create_method(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _records(method, 3, labels=(0, 1, 2) if name != "diffii" else (0, 1))
        b = _records(create_method(name), 3, labels=(0, 1, 2) if name != "diffii" else (0, 1))
    assert a == b
    assert len({str(sorted(r.items())) for r in a}) == len(a)  # different samples, different choices


def test_sdedit_strengths_and_sources_are_drawn_from_the_allowed_sets():
    for r in _records(create_method("dafusion"), 20, labels=(0, 1)):
        assert r["strength"] in {0.25, 0.5, 0.75, 1.0}
        assert r["source_ids"][0] in CTX.source_ids[r["label"]]
        assert "<class_" in r["prompt"]
    for r in _records(create_method("real_guidance"), 5):
        assert r["strength"] == 0.1 and "<class_" not in r["prompt"]


def test_mix_draws_another_class_and_soft_labels_follow_the_formula():
    records = _records(create_method("diffmix"), 20, labels=(0, 1, 2))
    for r in records:
        assert r["source_label"] != r["label"]
        assert r["source_ids"][0] in CTX.source_ids[r["source_label"]]
        s = r["strength"]
        assert r["soft_label"][r["label"]] == pytest.approx(s**0.8)
        assert r["soft_label"][r["source_label"]] == pytest.approx(1 - s**0.8)
        assert sum(r["soft_label"]) == pytest.approx(1.0)
    assert mix_soft_label(3, 0, 2, 0.5, 0.8) == pytest.approx([1 - 0.5**0.8, 0.0, 0.5**0.8])


def test_diffii_pairs_are_distinct_and_single_image_classes_fall_back_once():
    method = create_method("diffii", suffixes=["on grass", "at night"])
    for r in _records(method, 10, labels=(0, 1)):
        assert r["pair"] == "inversions" and len(set(r["source_ids"])) == 2
        assert set(r["source_ids"]) <= set(CTX.source_ids[r["label"]])
        assert r["suffix"] in {"on grass", "at night"} and r["prompt_with_suffix"].endswith(r["suffix"])
    with pytest.warns(UserWarning, match="single real image") as caught:
        single = _records(method, 3, labels=(2,))
    assert len(caught) == 1
    assert all(r["pair"] == "gaussian" and r["source_ids"] == ["b0"] for r in single)


def test_suffix_steps_follow_the_official_criterion_and_bad_ratios_are_rejected(tiny_sd):
    from diffexpand.sampling import Schedule

    # SD's schedule (1000 training steps, steps_offset 1): 25 DDIM steps run t = 961, 921, …, 1
    timesteps = Schedule.from_scheduler(tiny_sd.scheduler, 25).timesteps
    assert timesteps[:8].tolist() == [961, 921, 881, 841, 801, 761, 721, 681]
    # the suffix prompt while t >= T·(1 − s): t >= 700 at s = 0.3 is 7 steps (rounding s·25 gave 8)
    assert suffix_step_count(0.3, timesteps, 1000) == 7
    assert suffix_step_count(0.1, timesteps, 1000) == 2  # t >= 900: 961 and 921
    assert suffix_step_count(0.0, timesteps, 1000) == 0 and suffix_step_count(1.0, timesteps, 1000) == 25
    with pytest.raises(ValueError, match="split_ratio"):
        create_method("diffii", split_ratio=1.2)
    with pytest.raises(ValueError, match="strengths"):
        create_method("dafusion", strengths=[1.5])


@pytest.mark.parametrize("name", ["txt2img", "dafusion", "diffmix", "diffii"])
def test_generation_does_not_depend_on_batch_composition(tiny_sd, name):
    method = create_method(name, num_inference_steps=4)
    records = _attach_latents(_records(method, 2))
    together = method.generate(tiny_sd, [dict(r) for r in records])
    alone = torch.cat([method.generate(tiny_sd, [dict(r)]) for r in records])
    assert together.shape == (4, 3, 32, 32)
    assert (together - alone).abs().max() * 127.5 < 1.0  # within one intensity level


def test_sdedit_strength_zero_returns_the_source(tiny_sd):
    from diffexpand.methods.common import decode

    method = create_method("real_guidance", strengths=[0.0], num_inference_steps=4)
    records = _attach_latents(_records(method, 1))
    out = method.generate(tiny_sd, records)
    expected = decode(tiny_sd, torch.stack([r["source_latent"] for r in records]))
    torch.testing.assert_close(out, expected)


def test_diffii_records_lambda_and_suffix_changes_only_the_first_stage(tiny_sd):
    records = _attach_latents(_records(create_method("diffii", suffixes=["at night"]), 1))
    outputs = {}
    for s in (0.0, 0.5):
        method = create_method("diffii", suffixes=["at night"], split_ratio=s, num_inference_steps=4)
        batch = [dict(r) for r in records]
        outputs[s] = method.generate(tiny_sd, batch)
        for r in batch:
            assert 0 <= r["lambda"] <= 2 * math.pi / r["alpha"] + 1e-9
    assert (outputs[0.0] - outputs[0.5]).abs().max() > 1e-4  # the suffix acted in the first half


def test_inversion_helper_uses_the_prompt_guidance_and_steps(tiny_sd):
    from diffexpand.methods.common import conditions
    from diffexpand.sampling import Schedule, cfg_model_fn, ddim_invert

    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    prompts = ["a photo of a shoe", "a photo of a bag"]
    ours = invert_latents(tiny_sd, latents, prompts, steps=6, guidance=2.0)
    cond, uncond = conditions(tiny_sd, prompts)
    schedule = Schedule.from_scheduler(tiny_sd.scheduler, 6)
    expected = ddim_invert(cfg_model_fn(tiny_sd.unet, cond, uncond, 2.0), latents, schedule)
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, invert_latents(tiny_sd, latents, prompts, steps=6, guidance=1.0))


def test_real_filter_keeps_the_candidate_closest_to_the_class_prototype(tiny_sd):
    method = create_method("real_filter", num_inference_steps=3, candidates=3, extractor="oracle")
    records = _records(method, 2, labels=(0, 1))
    extractor = method.load_extractor()
    for r in records:  # a prototype per class: features of a fixed random image
        g = torch.Generator().manual_seed(r["label"])
        r["prototype"] = extractor(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)[0].detach()
    candidates = method.candidate_images(tiny_sd, records)
    assert candidates.shape[:2] == (3, 4)
    similarity = method.similarities(candidates, torch.stack([r["prototype"] for r in records]))
    kept = method.generate(tiny_sd, records)
    for i, r in enumerate(records):
        best = int(similarity[:, i].argmax())
        assert r["chosen_candidate"] == best and r["similarity"] == pytest.approx(float(similarity[best, i]))
        assert torch.allclose(kept[i], candidates[best, i], atol=1e-5)


def test_stream_names_give_independent_noise_and_real_filter_scores_every_candidate(tiny_sd):
    from diffexpand.methods.common import initial_noise

    records = [{"seed": 7}, {"seed": 8}]
    streams = ["candidate0", "candidate1", "candidate10", "sdedit", "partner"]
    noise = [initial_noise(tiny_sd, records, s) for s in streams]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            assert not torch.allclose(noise[i], noise[j]), (streams[i], streams[j])
    method = create_method("real_filter", num_inference_steps=3, candidates=3, extractor="oracle")
    records = _records(method, 2, labels=(0,))
    extractor = method.load_extractor()
    prototype = extractor(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)[0]
    for r in records:
        r["prototype"] = prototype.detach()
    method.generate(tiny_sd, records)
    for r in records:
        scores = r["candidate_scores"]
        assert len(scores) == 3 and len(set(scores)) == 3  # three different images, three scores
        assert r["chosen_candidate"] == max(range(3), key=scores.__getitem__)
        assert r["similarity"] == scores[r["chosen_candidate"]]


def test_distdiff_expands_every_real_image_the_same_number_of_times():
    from collections import Counter

    method = create_method("distdiff")
    for label, members in enumerate(CTX.source_ids):
        plans = [method.plan(CTX, label, sample_rng(k), index=k) for k in range(5 * len(members))]
        assert Counter(p["source_ids"][0] for p in plans) == {m: 5 for m in members}


def test_diffii_duplicate_images_fall_back_to_a_gaussian_partner_with_one_warning(tiny_sd, monkeypatch):
    import diffexpand.methods.diffii as diffii

    method = create_method("diffii", num_inference_steps=25, suffixes=["on grass"])
    records = _attach_latents(_records(method, 3, labels=(0, 1)))
    for r in records[:3]:  # class 0's pairs: the second inversion is the first one (duplicate images)
        r["inversion_b"] = r["inversion_a"].clone()
        r["source_ids"] = ["s0", "s1"]
    suffixed = []
    original = diffii.cfg_model_fn

    def recording(unet, cond, uncond, scale):  # which steps the suffixed prompt conditions
        model_fn = original(unet, cond, uncond, scale)

        def fn(x, t, i):
            suffixed.append(cond(i) is cond(0))
            return model_fn(x, t, i)

        return fn

    monkeypatch.setattr(diffii, "cfg_model_fn", recording)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = method.generate(tiny_sd, records)
    messages = [str(w.message) for w in caught if "(anti)parallel" in str(w.message)]
    assert len(messages) == 1 and "'s0'" in messages[0] and "'s1'" in messages[0]
    assert images.isfinite().all()
    assert [r["pair"] for r in records] == ["gaussian"] * 3 + ["inversions"] * 3
    assert all(0 < r["alpha"] < math.pi for r in records)
    assert suffixed == [True] * 7 + [False] * 18  # the official split at s = 0.3: 7 of 25 steps
