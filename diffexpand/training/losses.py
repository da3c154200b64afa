"""Training objectives of the diffusion stack, as plain functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noise_prediction_loss(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    text_hidden: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The standard DDPM objective (Ho et al. 2020, Alg. 1): MSE between the UNet output and its target
    (ε, or v for v-prediction) at a uniformly drawn timestep."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator, device=latents.device)
    a = alphas_cumprod.to(latents.device, latents.dtype)[t].reshape(b, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = a.sqrt() * noise - (1 - a).sqrt() * latents
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    pred = unet(noisy, t, encoder_hidden_states=text_hidden).sample
    return F.mse_loss(pred.float(), target.float())


def vae_loss(vae, images: torch.Tensor, kl_weight: float = 1e-6) -> dict[str, torch.Tensor]:
    """Reconstruction (MSE + L1) plus a small KL term, as in the LDM autoencoder without its GAN."""
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample()).sample
    mse = F.mse_loss(recon, images)
    l1 = F.l1_loss(recon, images)
    kl = posterior.kl().mean() / images[0].numel()
    return {"loss": mse + l1 + kl_weight * kl, "mse": mse, "l1": l1, "kl": kl}


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [-1, 1], measured on the [0, 1] scale, per image."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))
