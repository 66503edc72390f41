"""Training losses: multi-resolution STFT, mel L1, least-squares GAN and feature matching.

The regression losses (Yamamoto et al. 2020's multi-resolution STFT; HiFi-GAN's mel L1) get a
vocoder to intelligible speech within minutes on a CPU; the adversarial terms (LSGAN as in
HiFi-GAN, Mao et al. 2017, plus feature matching, Kumar et al. 2019) add the fine structure.
"""

from __future__ import annotations

import torch

from .torch_mel import hann, stft_magnitude

STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256))

Outputs = list[tuple[torch.Tensor, list[torch.Tensor]]]


def multi_resolution_stft(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 of log magnitudes."""
    total = y.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = hann(n_fft).to(y.device)
        s_hat = stft_magnitude(y_hat, n_fft, hop, n_fft, window)
        s = stft_magnitude(y, n_fft, hop, n_fft, window)
        convergence = torch.linalg.norm(s - s_hat) / torch.linalg.norm(s).clamp(min=1e-6)
        total = total + convergence + torch.mean(torch.abs(torch.log(s) - torch.log(s_hat)))
    return total / len(STFT_RESOLUTIONS)


def discriminator_loss(real: Outputs, fake: Outputs) -> torch.Tensor:
    return sum((torch.mean((1 - r) ** 2) + torch.mean(f**2) for (r, _), (f, _) in zip(real, fake, strict=True)),
               start=torch.zeros(()))


def generator_adversarial_loss(fake: Outputs) -> torch.Tensor:
    return sum((torch.mean((1 - f) ** 2) for f, _ in fake), start=torch.zeros(()))


def feature_matching_loss(real: Outputs, fake: Outputs) -> torch.Tensor:
    total = torch.zeros(())
    for (_, real_maps), (_, fake_maps) in zip(real, fake, strict=True):
        for r, f in zip(real_maps, fake_maps, strict=True):
            total = total + torch.mean(torch.abs(r.detach() - f))
    return total
