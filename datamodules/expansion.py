"""Plans every synthetic image as a record and serves the records to the predict loop.

One record per synthetic image: stable `sample_id`, label, per-sample seed, and every random choice
the method makes (drawn from that seed, never from a shared generator), so output does not depend on
batch size, world size or order. Real-image latents and Diff-II's inversion pool are computed once,
cached on disk, and attached to each record when it is loaded.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from diffexpand.cache import cache_key, cached_tensors
from diffexpand.finite import recompute_non_finite, refuse_non_finite
from diffexpand.manifest import check_run_settings, read_manifest
from diffexpand.methods import PlanContext, sample_rng
from diffexpand.seeding import sample_seed
from diffexpand.typed_args import typed_kwargs

AUTOCAST_OFF = "autocast off"  # the fallback for a cache row that came out non-finite


class RecordDataset(Dataset):
    """A sized list of records, so Lightning's distributed predict sampler splits it without padding
    or duplicates. Tensors are looked up per item, keeping the record list light."""

    def __init__(
        self, records: list[dict], sources: dict[str, torch.Tensor], inversions: dict[str, torch.Tensor],
        prototypes: dict[int, tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    ):  # fmt: skip
        self.records, self.sources, self.inversions = records, sources, inversions
        self.prototypes = prototypes or {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = dict(self.records[i])
        ids = record.get("source_ids", [])
        if self.sources and ids:
            record["source_latent"] = self.sources[ids[0]]
        if self.inversions and ids:
            record["inversion_a"] = self.inversions[ids[0]]
            if len(ids) > 1:
                record["inversion_b"] = self.inversions[ids[1]]
        if self.prototypes:
            record["prototype"], groups = self.prototypes[record["label"]]
            if groups is not None:
                record["group_prototypes"] = groups
        return record


def collate_records(records: list[dict]) -> list[dict]:
    return list(records)


class ExpansionDataModule(L.LightningDataModule):
    """`real`: init args of `LabeledImageDataModule` (dataset, subset, shots, seed, image size …).
    Without it, `class_names` alone drive prompt-only methods (txt2img)."""

    def __init__(
        self,
        real: dict | None = None,
        class_names: list[str] | None = None,
        expansion_ratio: float = 5.0,
        images_per_class: int | None = None,
        prompt_template: str = "a photo of a {}",
        seed: int = 0,
        batch_size: int = 8,
        output_dir: str | None = None,
        cache_dir: str = ".cache/diffexpand",
        cache_batch_size: int = 64,
    ):
        super().__init__()
        if real is None and not class_names:
            raise ValueError("give `real` (the real subset) or `class_names` (for prompt-only methods)")
        if images_per_class is not None and images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
        if expansion_ratio <= 0:
            raise ValueError(f"expansion_ratio must be > 0, got {expansion_ratio}")
        self.save_hyperparameters()

    # ---- the real subset ------------------------------------------------------------------------
    def _real(self):
        from datamodules.labeled import LabeledImageDataModule

        if not hasattr(self, "_real_dm"):
            kwargs = typed_kwargs(LabeledImageDataModule, self.hparams.real, "data.init_args.real")
            self._real_dm = LabeledImageDataModule(**kwargs)
            self._real_dm.setup("fit")
        return self._real_dm

    def _context(self, concepts) -> tuple[PlanContext, list[int]]:
        """The plan context and the number of real images per class."""
        hp = self.hparams
        if hp.real is None:
            names = list(hp.class_names)
            metas, ids_per_class, counts = ["object"] * len(names), [[] for _ in names], [0] * len(names)
        else:
            real = self._real()
            names, metas = real.class_names, real.metaclasses
            data, ids_per_class = real.train_set.data, [[] for _ in names]
            for j in real.train_set.indices:
                ids_per_class[int(data.labels[j])].append(data.ids[j])
            counts = [len(v) for v in ids_per_class]
        plain = [hp.prompt_template.format(n) for n in names]
        if concepts is not None:
            concepts.check_matches(names)
            class_prompts = [concepts.prompt(c) for c in range(len(names))]
        else:
            class_prompts = plain
        ctx = PlanContext(names, metas, ids_per_class, class_prompts, plain)
        return ctx, counts

    # ---- planning -------------------------------------------------------------------------------
    def plan(self, method, ctx: PlanContext, counts: list[int]) -> list[dict]:
        hp = self.hparams
        records = []
        for label, name in enumerate(ctx.class_names):
            n = hp.images_per_class or max(1, round(hp.expansion_ratio * counts[label]))
            for k in range(n):
                sample_id = f"c{label:04d}_{k:05d}"
                seed = sample_seed(hp.seed, sample_id)
                record = {
                    "sample_id": sample_id,
                    "label": label,
                    "class_name": name,
                    "seed": seed,
                    "method": method.name,
                }
                records.append(record | method.plan(ctx, label, sample_rng(seed), index=k))
        return records

    # ---- heavy inputs, cached -------------------------------------------------------------------
    def _real_latents(self, module) -> dict[str, torch.Tensor]:
        from diffexpand.models.vae import encode_images

        real = self._real()
        data, indices = real.train_set.data, real.train_set.indices
        ids = [data.ids[int(j)] for j in indices]
        hp = real.hparams
        key = cache_key(model=module.model_fingerprint(), data=[hp.dataset, hp.root, hp.image_size], ids=ids)

        @torch.no_grad()  # setup runs outside the predict loop's inference mode
        def build():
            images = torch.stack([real.train_set[i]["pixel_values"] for i in range(len(ids))])
            device = module.build_device()
            # the VAE runs in float32 outside autocast (diffexpand.models.vae): no lower-precision path
            # to fall back from, so a NaN / Inf latent is the image's own fault and is named
            latents = torch.cat([encode_images(module.parts.vae, chunk.to(device)).float()
                                 for chunk in images.split(self.hparams.cache_batch_size)])  # fmt: skip
            refuse_non_finite(latents, ids, "VAE latents", hint="")
            return {"latents": latents}

        latents = cached_tensors(self.hparams.cache_dir, "latents", key, build)["latents"]
        return dict(zip(ids, latents, strict=True))

    def _inversions(self, module, method, latents: dict[str, torch.Tensor], ctx) -> dict[str, torch.Tensor]:
        from diffexpand.methods.diffii import invert_latents

        ids = list(latents)
        label_of = {sid: c for c, members in enumerate(ctx.source_ids) for sid in members}
        prompts = [ctx.class_prompts[label_of[sid]] for sid in ids]
        # the model fingerprint covers the concept folder (the prompts' tokens) too
        settings = [method.inversion_steps, method.inversion_guidance]
        key = cache_key(model=module.model_fingerprint(), ids=ids, prompts=prompts, settings=settings)

        def build():
            stacked = torch.stack([latents[s] for s in ids])
            out = []
            bs, device = self.hparams.cache_batch_size, module.build_device()
            for start in range(0, len(ids), bs):
                chunk = stacked[start : start + bs].to(device, module.parts.unet.dtype)
                batch_prompts = prompts[start : start + bs]
                with module.precision_context(device):
                    inverted = invert_latents(module.parts, chunk, batch_prompts, *settings)
                out.append(inverted.float())

            def without_autocast(rows):
                chunk = stacked[rows.cpu()].to(device, module.parts.unet.dtype)
                with torch.autocast(device.type, enabled=False):
                    return invert_latents(module.parts, chunk, [prompts[i] for i in rows.tolist()], *settings)

            inverted = recompute_non_finite(torch.cat(out), without_autocast, ids, "Inversions", AUTOCAST_OFF)
            return {"inversions": inverted}

        inverted = cached_tensors(self.hparams.cache_dir, "inversions", key, build)["inversions"]
        return dict(zip(ids, inverted, strict=True))

    def _real_features(self, module, method) -> dict[str, torch.Tensor]:
        """L2-normalised features of every real image under the method's extractor, cached."""
        from diffexpand.features import normalized

        real = self._real()
        data, indices = real.train_set.data, real.train_set.indices
        ids = [data.ids[int(j)] for j in indices]
        extractor = method.load_extractor()
        hp = real.hparams
        key = cache_key(extractor=extractor.fingerprint(), data=[hp.dataset, hp.root, hp.image_size], ids=ids)
        self._features_key = key

        @torch.no_grad()
        def build():
            device = module.build_device()
            images = torch.stack([real.train_set[i]["pixel_values"] for i in range(len(ids))])
            feats = [normalized(extractor(chunk.to(device)))
                     for chunk in images.split(self.hparams.cache_batch_size)]  # fmt: skip

            def without_autocast(rows):
                with torch.autocast(device.type, enabled=False):
                    return normalized(extractor(images[rows.cpu()].to(device)))

            return {"features": recompute_non_finite(torch.cat(feats), without_autocast, ids, "Features",
                                                     AUTOCAST_OFF)}  # fmt: skip

        features = cached_tensors(self.hparams.cache_dir, "features", key, build)["features"]
        return dict(zip(ids, features, strict=True))

    def _prototypes(self, module, method, ctx) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """{class: (class prototype, K group prototypes or None)} from the cached real features; the
        group clustering is cached too (keyed by the features, K, clustering and seed)."""
        from diffexpand.guidance import class_prototype, hierarchical_prototypes
        from diffexpand.guidance.prototypes import faiss_gpu_available

        features = self._real_features(module, method)
        by_class = {c: torch.stack([features[s] for s in members])
                    for c, members in enumerate(ctx.source_ids) if members}  # fmt: skip
        k = method.prototype_groups
        if k <= 0:
            return {c: (class_prototype(f), None) for c, f in by_class.items()}
        classes = sorted(by_class)
        settings = [k, method.clustering, self.hparams.seed]
        # k-means runs in FAISS on the GPU when the features are there and FAISS has a GPU build
        gpu = module.target_device().type == "cuda" and faiss_gpu_available()
        key = cache_key(features=self._features_key, settings=settings, classes=classes,
                        backend="faiss-gpu" if gpu else "cpu")  # fmt: skip

        def build():
            device = module.build_device()
            on_device = {c: f.to(device) for c, f in by_class.items()}
            protos = hierarchical_prototypes(on_device, *settings, class_names=ctx.class_names)
            return {"classes": torch.stack([protos[c][0] for c in classes]),
                    "groups": torch.stack([protos[c][1] for c in classes])}  # fmt: skip

        cached = cached_tensors(self.hparams.cache_dir, "prototypes", key, build)
        return {c: (cached["classes"][i], cached["groups"][i]) for i, c in enumerate(classes)}

    def _generated_suffixes(self, module, method) -> list[str]:
        from diffexpand.cache import cached_json
        from diffexpand.suffixes.generate import generate_suffixes

        real = self._real()
        data, indices = real.train_set.data, real.train_set.indices
        ids = [data.ids[int(j)] for j in indices]
        settings = [method.suffix_captioner, method.suffix_llm, method.num_suffixes]
        key = cache_key(data=[real.hparams.dataset, real.hparams.root], ids=ids, settings=settings)

        def build():
            images = [data.image(int(j)) for j in indices]
            return generate_suffixes(images, real.metaclasses, *settings, device=str(module.build_device()))

        return list(cached_json(self.hparams.cache_dir, "suffixes", key, build))

    # ---- Lightning hooks ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module
        method, concepts = module.method, module.concepts
        # the dataset (missing root, empty or bad files) and the concept folder's classes are checked
        # before the diffusion model loads: a wrong setting fails in seconds, not after minutes
        ctx, counts = self._context(concepts)
        module.load_parts()
        if getattr(method, "needs_generated_suffixes", False):
            method.suffixes = self._generated_suffixes(module, method)
        records = self.plan(method, ctx, counts)
        output_dir, hp = self.hparams.output_dir, self.hparams
        if output_dir:
            settings = {"method": method.name, "method_settings": dataclasses.asdict(method),
                        "model": module.model_fingerprint(), "real": hp.real, "class_names": hp.class_names,
                        "prompt_template": hp.prompt_template, "seed": hp.seed}  # fmt: skip
            check_run_settings(output_dir, settings)
        done = {r["id"] for r in read_manifest(output_dir)} if output_dir else set()
        self.records = [r for r in records if r["sample_id"] not in done]
        self.num_done = len(records) - len(self.records)
        sources, inversions, prototypes = {}, {}, {}
        if self.records and (method.uses_sources or method.uses_inversions):
            sources = self._real_latents(module)
            if method.uses_inversions:
                inversions = self._inversions(module, method, sources, ctx)
        if self.records and method.uses_real_features:
            prototypes = self._prototypes(module, method, ctx)
        self.dataset = RecordDataset(self.records, sources, inversions, prototypes)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=collate_records
        )
