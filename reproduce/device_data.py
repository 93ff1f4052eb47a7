"""Training data on the device for the CIFAR scales: decoded once into one uint8 tensor where the model
trains, augmented a whole batch at a time with tensor ops, no worker processes.

At 32 px the models are tiny and a GPU step takes microseconds; what costs is decoding and augmenting every image in
Python, one at a time. Here the set is decoded once, and each batch is cut from the tensor with
- RandomResizedCrop: the boxes drawn as torchvision's `RandomResizedCrop.get_params` (timm's too) draws them, ten
  attempts of area and log-aspect, then the centre fallback, vectorised over the batch, and resampled with one
  `grid_sample` (bicubic or bilinear, as the config's interpolation says);
- the horizontal flip, folded into the same sampling grid;
- ToTensor and Normalize in their order, then timm's `RandomErasing` on the normalised batch (its batch mode, as
  timm's prefetching loader applies it); Mixup/CutMix stay in the training step, as for the other loaders.
Every draw comes from a generator seeded by (run seed, rank, epoch, position of the batch), so a resumed run sees
the same batches. Left out, and refused with the reason: RandAugment and colour jitter (no batched form here).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing
from torch import Tensor

from reproduce.config import ConfigError, TrainConfig
from reproduce.models import seed_everything
from reproduce.sampling import ResumableSampler, step_seed


def check_supported(cfg: TrainConfig) -> None:
    """Refuse what the device path cannot apply, rather than train without it silently."""
    if cfg.auto_augment:
        raise ConfigError(f"device_data=true has no batched RandAugment: set auto_augment='' (now "
                          f"{cfg.auto_augment!r}) so the record says it was left out, or device_data=false")
    if cfg.color_jitter:
        raise ConfigError(f"device_data=true has no batched colour jitter: set color_jitter=0 (now {cfg.color_jitter})")
    if cfg.train_interpolation not in ("bicubic", "bilinear"):
        raise ConfigError(f"device_data=true resamples bicubic or bilinear, not {cfg.train_interpolation!r}")


class DeviceImages:
    """Every training image as one uint8 [N, 3, H, W] tensor on `device`, and the labels."""

    def __init__(self, dataset, device: str) -> None:
        keep, dataset.transform = dataset.transform, lambda image: image  # the decoded image, untransformed
        try:
            arrays = [np.asarray(dataset[i][0].convert("RGB")) for i in range(len(dataset))]
        finally:
            dataset.transform = keep
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ConfigError(f"device_data=true needs images of one size (CIFAR scales); found {sorted(shapes)[:3]}")
        self.images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.tensor([s[1] for s in dataset.samples], device=device)


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
               gen: torch.Generator) -> Tensor:
    """[n, 4] boxes (top, left, h, w), drawn as torchvision's RandomResizedCrop.get_params draws one, for n images."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, 10, generator=gen, device=gen.device))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, 10, generator=gen,
                                                                                        device=gen.device)
    aspect = log_r.exp()
    w = (target * aspect).sqrt().round()
    h = (target / aspect).sqrt().round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1)  # the first attempt that fits
    found = ok.any(dim=1)
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    # the fallback: the whole image, or its centre at the nearest allowed aspect
    in_ratio = width / height
    fw, fh = (width, round(width / ratio[0])) if in_ratio < ratio[0] else \
        (round(height * ratio[1]), height) if in_ratio > ratio[1] else (width, height)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=gen, device=gen.device)
    top = torch.where(found, (u[:, 0] * (height - h + 1)).floor(), ((height - h) // 2))
    left = torch.where(found, (u[:, 1] * (width - w + 1)).floor(), ((width - w) // 2))
    return torch.stack([top, left, h, w], dim=1)


def augment(images: Tensor, boxes: Tensor, flip: Tensor, out_size: int, mode: str) -> Tensor:
    """Crop `boxes` out of uint8 images, resize to out_size, flip where `flip`; float in [0, 1]."""
    n, _, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(n, 2, 3, device=images.device)
    sx = w / width
    theta[:, 0, 0] = torch.where(flip, -sx, sx)  # output x in [-1, 1] -> input x; a flip mirrors it
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 255).round_().div_(255)  # round: the uint8 a PIL resize would give, then ToTensor


class DeviceLoader:
    """Batches (images, targets, indices) of the sampler's order, augmented on the device: the DataLoader's place."""

    def __init__(self, data: DeviceImages, sampler: ResumableSampler, batch_size: int, cfg: TrainConfig, rank: int,
                 img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        check_supported(cfg)
        self.data, self.sampler, self.batch_size, self.cfg, self.rank, self.img_size = \
            data, sampler, batch_size, cfg, rank, img_size
        device = data.images.device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.erase = RandomErasing(cfg.reprob, mode="pixel", device=str(device)) if cfg.reprob > 0 else None
        self.mode = "bicubic" if cfg.train_interpolation == "bicubic" else "bilinear"

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = [index for index, _ in self.sampler]
        device = self.data.images.device
        for b in range(len(order) // self.batch_size):
            position = self.sampler.start + b * self.batch_size  # absolute: the same batch after a resume
            seed = step_seed(self.cfg.seed, self.rank, self.sampler.epoch, 2_000_000_000 + position)
            gen = torch.Generator(device=device).manual_seed(seed)
            index = torch.tensor(order[b * self.batch_size:(b + 1) * self.batch_size], device=device)
            images = self.data.images[index]
            boxes = crop_boxes(len(index), images.shape[2], images.shape[3], self.cfg.train_crop_scale,
                               (3 / 4, 4 / 3), gen)
            flip = torch.rand(len(index), generator=gen, device=device) < self.cfg.hflip
            batch = (augment(images, boxes, flip, self.img_size, self.mode) - self.mean) / self.std
            if self.erase is not None:
                seed_everything(seed)  # timm's RandomErasing draws from Python's random and torch's global generator
                batch = self.erase(batch)
            yield batch, self.data.labels[index], index
