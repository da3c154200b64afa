"""One LoRA (Hu et al. 2021) shared by all classes on the UNet attention projections, via peft."""

from __future__ import annotations

from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def add_shared_lora(unet, rank: int = 10, alpha: float | None = None, targets=DEFAULT_TARGETS) -> None:
    if rank < 1:
        raise ValueError(f"lora rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    unet.add_adapter(config)


def lora_layers_for_saving(unet) -> dict:
    """The adapter weights in the key format `save_lora_weights` / `load_lora_weights` use."""
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
