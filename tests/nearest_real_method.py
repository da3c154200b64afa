"""An example of adding an expansion method: this one file (and a config) is all it takes.

Nearest real image: each record draws a txt2img sample and blends it with the real image of its class
whose thumbnail is nearest to the sample's. Its precomputed input is a per-image feature of the real
images (an 8 x 8 thumbnail), which the method builds and caches itself in `prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffexpand.methods import ExpansionMethod, Generated, Txt2Img, register_method
from diffexpand.methods.inputs import by_id


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(images.float(), 8).flatten(1)


@register_method("nearest_real")
@dataclass
class NearestReal(ExpansionMethod):
    """A txt2img sample blended with the real image of its class nearest to it.

    Args:
        num_inference_steps: DDIM steps of the txt2img sample.
        guidance_scale: classifier-free guidance scale.
        weight: share of the nearest real image in the blend (0: the txt2img sample).
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    weight: float = 0.5

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {"prompt": ctx.plain_prompts[label]}

    def prepare(self, ws) -> dict:
        real = ws.require_real(self.name)

        def build():
            pixels = real.pixels()
            return {"pixels": pixels, "thumbnails": thumbnails(pixels)}

        n, side = len(real.ids), real.image_size  # what a read-back entry must hold (checked on load)
        expect = {"pixels": (n, 3, side, side), "thumbnails": (n, None)}
        cached = ws.cached("nearest-real", build, expect, data=real.source, ids=real.ids)
        pixels, thumbs = by_id(real.ids, cached["pixels"]), by_id(real.ids, cached["thumbnails"])
        return {"members": ws.ctx.source_ids, "pixels": pixels, "thumbnails": thumbs}

    def inputs_for(self, record, prepared) -> dict[str, torch.Tensor]:
        members = prepared["members"][record.label]
        return {
            "real_pixels": torch.stack([prepared["pixels"][m] for m in members]),
            "real_thumbnails": torch.stack([prepared["thumbnails"][m] for m in members]),
        }

    @torch.no_grad()
    def generate(self, parts, batch) -> Generated:
        sampler = Txt2Img(self.num_inference_steps, self.guidance_scale)
        samples = sampler.generate(parts, batch).images
        out, extras = [], []
        for sample, inputs in zip(samples, batch.inputs, strict=True):  # classes differ in size
            distances = (inputs["real_thumbnails"].to(sample) - thumbnails(sample[None])).norm(dim=1)
            nearest = int(distances.argmin())
            real = F.interpolate(inputs["real_pixels"][nearest : nearest + 1].to(sample), sample.shape[-2:])
            out.append((1 - self.weight) * sample + self.weight * real[0])
            extras.append({"nearest_index": nearest, "distance": float(distances[nearest])})
        return Generated(torch.stack(out), extras)
