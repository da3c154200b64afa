"""Expansion methods: planning draws from each sample's own seed; generation is batch-independent."""

import math
import warnings

import pytest
import torch

from diffexpand.methods import Batch, PlanContext, Record, available_methods, create_method, sample_rng
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


def _records(method, n_per_class=2, labels=(0, 1), ctx=CTX) -> list[Record]:
    records = []
    for label in labels:
        for k in range(n_per_class):
            sid = f"c{label}_{k}"
            seed = sample_seed(0, sid)
            choices = method.plan(ctx, label, sample_rng(seed), index=k)
            records.append(Record(sid, label, ctx.class_names[label], seed, method.name, choices))
    return records


def _batch(records, shape=(4, 8, 8)) -> Batch:
    """The records with seeded stand-ins for the latents and inversions a data module would attach."""
    inputs = []
    for r in records:
        g = torch.Generator().manual_seed(r.seed % 2**31)
        names = ("source_latent", "inversion_a", "inversion_b")
        inputs.append({name: torch.randn(shape, generator=g) for name in names})
    return Batch(records, inputs)


@pytest.mark.parametrize("name", [n for n in available_methods() if n not in {"real_filter", "distdiff"}])
def test_plans_are_a_function_of_the_sample_seed(name):
    method = create_method(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _records(method, 3, labels=(0, 1, 2) if name != "diffii" else (0, 1))
        b = _records(create_method(name), 3, labels=(0, 1, 2) if name != "diffii" else (0, 1))
    assert a == b


def test_sdedit_strengths_and_sources_are_drawn_from_the_allowed_sets():
    for r in _records(create_method("dafusion"), 20, labels=(0, 1)):
        assert r["strength"] in {0.25, 0.5, 0.75, 1.0}
        assert r["source_ids"][0] in CTX.source_ids[r.label]
        assert "<class_" in r["prompt"]
    for r in _records(create_method("real_guidance"), 5):
        assert r["strength"] == 0.1 and "<class_" not in r["prompt"]


def test_mix_draws_another_class_and_soft_labels_follow_the_formula():
    records = _records(create_method("diffmix"), 20, labels=(0, 1, 2))
    for r in records:
        assert r["source_label"] != r.label
        assert r["source_ids"][0] in CTX.source_ids[r["source_label"]]
        s = r["strength"]
        assert r["soft_label"][r.label] == pytest.approx(s**0.8)
        assert r["soft_label"][r["source_label"]] == pytest.approx(1 - s**0.8)
        assert sum(r["soft_label"]) == pytest.approx(1.0)
    assert mix_soft_label(3, 0, 2, 0.5, 0.8) == pytest.approx([1 - 0.5**0.8, 0.0, 0.5**0.8])


def test_diffii_pairs_are_distinct_and_single_image_classes_fall_back_once():
    method = create_method("diffii", suffixes=["on grass", "at night"])
    for r in _records(method, 10, labels=(0, 1)):
        assert r["pair"] == "inversions" and len(set(r["source_ids"])) == 2
        assert set(r["source_ids"]) <= set(CTX.source_ids[r.label])
        assert r["suffix"] in {"on grass", "at night"} and r["prompt_with_suffix"].endswith(r["suffix"])
    attributes = create_method("diffii", suffix_preset="fashion_mnist_attributes")
    for r in _records(attributes, 10, labels=(0, 1)):  # ", dark" continues the prompt as v2's captions do
        assert r["suffix"].startswith(", ") and r["prompt_with_suffix"] == r["prompt"] + r["suffix"]
    with pytest.warns(UserWarning, match="single real image") as caught:
        single = _records(method, 3, labels=(2,))
    assert len(caught) == 1
    assert all(r["pair"] == "gaussian" and r["source_ids"] == ["b0"] for r in single)


TWO_METACLASSES = PlanContext(
    class_names=["Sandal", "Shirt"],
    metaclasses=["shoe", "top"],
    source_ids=[["s0", "s1"], ["t0", "t1"]],
    class_prompts=["a photo of a <class_0> shoe", "a photo of a <class_1> top"],
    plain_prompts=["a photo of a Sandal", "a photo of a Shirt"],
)


@pytest.mark.parametrize("name", ["diffii", "diffii_distdiff"])
def test_suffix_exclude_bars_whole_words_for_one_metaclass_only(name):
    exclude = {"shoe": ["dark", "narrow"]}
    method = create_method(name, suffix_preset="fashion_mnist_attributes", suffix_exclude=exclude)
    plain = create_method(name, suffix_preset="fashion_mnist_attributes")
    records = _records(method, 200, labels=(0, 1), ctx=TWO_METACLASSES)
    drawn = {label: {r["suffix"] for r in records if r.label == label} for label in (0, 1)}
    barred = {x for x in plain.suffixes if "dark" in x or "narrow" in x}
    assert drawn[0] and not drawn[0] & barred  # shoes: never a suffix with either word
    assert drawn[0] == set(plain.suffixes) - barred  # and every other suffix is still drawn
    assert drawn[1] == set(plain.suffixes)  # tops: untouched
    # an exclusion that bars nothing plans what no exclusion plans, draw for draw
    nothing_barred = create_method(
        name, suffix_preset="fashion_mnist_attributes", suffix_exclude={"shoe": ["red"]}
    )
    assert [r.choices for r in _records(nothing_barred, 20, labels=(0, 1), ctx=TWO_METACLASSES)] == [
        r.choices for r in _records(plain, 20, labels=(0, 1), ctx=TWO_METACLASSES)
    ]
    # a word inside another word is not that word ("darker" is not "dark"); case does not matter
    partial = create_method(name, suffixes=["darker", "Dark blue"], suffix_exclude={"shoe": ["DARK"]})
    assert {r["suffix"] for r in _records(partial, 20, labels=(0,), ctx=TWO_METACLASSES)} == {"darker"}


def test_suffix_exclude_refuses_unknown_metaclasses_empty_pools_and_no_suffixes():
    with pytest.raises(ValueError, match="needs suffixes"):
        create_method("diffii", suffix_exclude={"shoe": ["dark"]})
    unknown = create_method("diffii", suffixes=["dark"], suffix_exclude={"shoes": ["dark"]})
    with pytest.raises(ValueError, match=r"\['shoes'\].*it has: shoe, top"):
        _records(unknown, 1, labels=(0,), ctx=TWO_METACLASSES)
    emptied = create_method("diffii", suffixes=[", dark", ", dark, wide"], suffix_exclude={"top": ["dark"]})
    with pytest.raises(ValueError, match="leaves metaclass 'top' no suffix"):
        _records(emptied, 1, labels=(0,), ctx=TWO_METACLASSES)


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


def test_sdedit_strength_zero_returns_the_source(tiny_sd):
    from diffexpand.methods.common import decode

    method = create_method("real_guidance", strengths=[0.0], num_inference_steps=4)
    batch = _batch(_records(method, 1))
    out = method.generate(tiny_sd, batch).images
    expected = decode(tiny_sd, batch.stack("source_latent"))
    torch.testing.assert_close(out, expected)


def test_diffii_records_lambda_and_suffix_changes_only_the_first_stage(tiny_sd):
    batch = _batch(_records(create_method("diffii", suffixes=["at night"]), 1))
    outputs = {}
    for s in (0.0, 0.5):
        method = create_method("diffii", suffixes=["at night"], split_ratio=s, num_inference_steps=4)
        generated = method.generate(tiny_sd, batch)
        outputs[s] = generated.images
        for extra in generated.extras:
            assert 0 <= extra["lambda"] <= 2 * math.pi / extra["alpha"] + 1e-9
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
    extractor = method.feature_extractor()
    inputs = []
    for r in records:  # a prototype per class: features of a fixed random image
        g = torch.Generator().manual_seed(r.label)
        inputs.append({"prototype": extractor(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)[0].detach()})
    batch = Batch(records, inputs)
    candidates = method.candidate_images(tiny_sd, batch)
    assert candidates.shape[:2] == (3, 4)
    similarity = method.similarities(candidates, batch.stack("prototype"))
    kept = method.generate(tiny_sd, batch)
    for i, extra in enumerate(kept.extras):
        best = int(similarity[:, i].argmax())
        assert extra["chosen_candidate"] == best
        assert extra["similarity"] == pytest.approx(float(similarity[best, i]))
        assert torch.allclose(kept.images[i], candidates[best, i], atol=1e-5)


def test_stream_names_give_independent_noise_and_real_filter_scores_every_candidate(tiny_sd):
    from diffexpand.methods.common import initial_noise

    records = [Record(f"r{seed}", 0, "Sandal", seed, "test", {}) for seed in (7, 8)]
    streams = ["candidate0", "candidate1", "candidate10", "sdedit", "partner"]
    noise = [initial_noise(tiny_sd, records, s) for s in streams]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            assert not torch.allclose(noise[i], noise[j]), (streams[i], streams[j])
    method = create_method("real_filter", num_inference_steps=3, candidates=3, extractor="oracle")
    records = _records(method, 2, labels=(0,))
    extractor = method.feature_extractor()
    prototype = extractor(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)[0]
    generated = method.generate(tiny_sd, Batch(records, [{"prototype": prototype.detach()}] * len(records)))
    for extra in generated.extras:
        scores = extra["candidate_scores"]
        assert len(scores) == 3 and len(set(scores)) == 3  # three different images, three scores
        assert extra["chosen_candidate"] == max(range(3), key=scores.__getitem__)
        assert extra["similarity"] == scores[extra["chosen_candidate"]]


def test_distdiff_expands_every_real_image_the_same_number_of_times():
    from collections import Counter

    method = create_method("distdiff")
    for label, members in enumerate(CTX.source_ids):
        plans = [method.plan(CTX, label, sample_rng(k), index=k) for k in range(5 * len(members))]
        assert Counter(p["source_ids"][0] for p in plans) == {m: 5 for m in members}


def test_diffii_duplicate_images_fall_back_to_a_gaussian_partner_with_one_warning(tiny_sd, monkeypatch):
    import diffexpand.methods.diffii as diffii

    method = create_method("diffii", num_inference_steps=25, suffixes=["on grass"])
    records = _records(method, 3, labels=(0, 1))
    for i, r in enumerate(records[:3]):  # class 0's pairs are the same two images
        records[i] = Record(
            r.id, r.label, r.class_name, r.seed, r.method, r.choices | {"source_ids": ["s0", "s1"]}
        )
    batch = _batch(records)
    for inputs in batch.inputs[:3]:  # whose inversions are the same (duplicate images)
        inputs["inversion_b"] = inputs["inversion_a"].clone()
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
        generated = method.generate(tiny_sd, batch)
    messages = [str(w.message) for w in caught if "(anti)parallel" in str(w.message)]
    assert len(messages) == 1 and "'s0'" in messages[0] and "'s1'" in messages[0]
    assert generated.images.isfinite().all()
    used = [e.get("pair", r["pair"]) for r, e in zip(records, generated.extras, strict=True)]
    assert used == ["gaussian"] * 3 + ["inversions"] * 3
    assert all(r["pair"] == "inversions" for r in records)  # the planned record is left as planned
    assert all(0 < e["alpha"] < math.pi for e in generated.extras)
    assert suffixed == [True] * 7 + [False] * 18  # the official split at s = 0.3: 7 of 25 steps


def test_optional_text_settings_read_null_from_the_command_line_as_none():
    from diffexpand.methods import DiffII

    assert DiffII(suffix_preset="null", suffix_file="None").suffixes == []  # nothing to resolve
    assert DiffII(suffix_preset="fashion_mnist").suffixes  # a real value is kept


@pytest.mark.parametrize("name", [n for n in available_methods() if n not in {"txt2img", "real_filter"}])
def test_real_latents_larger_than_the_unets_sample_size_are_noised_at_their_own_size(tiny_sd, name):
    """The data's image size sets the latent size (SD-1.5 trained at 512 px, used at 256 px): the noise
    added to a real image's latent or paired with its inversion takes that latent's shape."""
    side = tiny_sd.unet.config.sample_size + 4
    guided = "distdiff" in name
    extra = {"extractor": "oracle", "guidance_steps": 2} if guided else {}
    method = create_method(name, num_inference_steps=4, **extra)
    batch = _batch(_records(method, 1), shape=(4, side, side))
    if guided:  # prototypes of real features, as the data module attaches them
        extractor = method.feature_extractor()
        g = torch.Generator().manual_seed(0)
        for inputs in batch.inputs:
            inputs["prototype"] = extractor(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)[0].detach()
            inputs["group_prototypes"] = extractor(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1).detach()
    images = method.generate(tiny_sd, batch).images
    assert images.shape[-2:] == (side * tiny_sd.vae_scale_factor,) * 2
