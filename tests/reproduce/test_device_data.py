"""Issue #21: CIFAR-scale training data on the device, against the per-image PIL path it replaces."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.transforms.functional import to_tensor

from reproduce.config import ConfigError, TrainConfig
from reproduce.device_data import DeviceImages, DeviceLoader, augment, check_supported, crop_boxes
from reproduce.sampling import ResumableSampler


def test_crop_boxes_follow_torchvisions_distribution():
    """The same algorithm as RandomResizedCrop.get_params, vectorised: compare the moments of 20,000 draws."""
    n, scale, ratio = 20_000, (0.35, 1.0), (3 / 4, 4 / 3)
    ours = crop_boxes(n, 32, 32, scale, ratio, torch.Generator().manual_seed(0)).double()
    random.seed(0)
    torch.manual_seed(0)
    img = Image.new("RGB", (32, 32))
    theirs = torch.tensor([RandomResizedCropAndInterpolation.get_params(img, scale, ratio) for _ in range(n)]).double()
    for col in range(4):  # top, left, height, width
        assert ours[:, col].mean().item() == pytest.approx(theirs[:, col].mean().item(), rel=0.02, abs=0.1)
        assert ours[:, col].std().item() == pytest.approx(theirs[:, col].std().item(), rel=0.05, abs=0.1)
    assert ((ours[:, 0] + ours[:, 2]) <= 32).all() and ((ours[:, 1] + ours[:, 3]) <= 32).all()


def test_the_fallback_is_the_centre_crop_at_the_nearest_ratio():
    boxes = crop_boxes(4, 32, 64, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))  # a 2:1 image, ratio 1
    assert boxes.tolist() == [[0.0, 16.0, 32.0, 32.0]] * 4


def test_the_whole_image_unflipped_is_totensor_exactly_and_a_flip_mirrors_it():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 3)
    for mode in ("bicubic", "bilinear"):
        same = augment(images, full, torch.zeros(3, dtype=torch.bool), 32, mode)
        flipped = augment(images, full, torch.ones(3, dtype=torch.bool), 32, mode)
        pil = torch.stack([to_tensor(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
        assert torch.equal(same, pil) and torch.equal(flipped, pil.flip(-1))


def _loader(tmp_path, n=12, batch=4, **changes):
    class Items:  # the shape of the training datasets: samples, transform, items (image, label, index)
        def __init__(self):
            self.samples = [(f"{i}.png", i % 3) for i in range(n)]
            self.transform = None
            self.arrays = [np.full((32, 32, 3), i, dtype=np.uint8) for i in range(n)]

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.arrays[i])), self.samples[i][1], i

    cfg = TrainConfig(**{"auto_augment": "", "color_jitter": 0.0, "reprob": 0.25, "train_crop_scale": (0.6, 1.0),
                         **changes})
    data = DeviceImages(Items(), "cpu")
    sampler = ResumableSampler(torch.utils.data.SequentialSampler(range(n)), seed=0, rank=0)
    return DeviceLoader(data, sampler, batch, cfg, 0, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), sampler


def test_batches_keep_the_labels_and_a_resumed_epoch_sees_the_same_batches(tmp_path):
    loader, sampler = _loader(tmp_path)
    sampler.inner.set_epoch = lambda epoch: None
    sampler.set_epoch(3)
    full = list(loader)
    assert [b[2].tolist() for b in full] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all((labels == index % 3).all() for _, labels, index in full)
    sampler.set_epoch(3, start=4)  # resumed after the first batch
    resumed = list(loader)
    assert len(resumed) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], resumed))


@pytest.mark.parametrize("change,message", [
    ({"auto_augment": "rand-m9-mstd0.5-inc1"}, "no batched RandAugment"),
    ({"auto_augment": "", "color_jitter": 0.4}, "no batched colour jitter"),
])
def test_what_the_device_path_cannot_do_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        check_supported(TrainConfig(**change))


def test_normalised_values_match_the_per_image_pipeline(tmp_path):
    """Mean over a batch: ToTensor then Normalize, as timm's transform does it per image."""
    loader, sampler = _loader(tmp_path, n=4, batch=4, reprob=0.0)
    sampler.inner.set_epoch = lambda epoch: None
    sampler.set_epoch(0)
    (batch, _, index), = list(loader)
    expected = (index.view(-1, 1, 1, 1).float() / 255 - 0.5) / 0.25  # constant images stay constant under any crop
    assert torch.allclose(batch, expected.expand_as(batch), atol=1e-6)
    assert not math.isnan(batch.sum().item())


def test_a_run_trains_from_device_batches_and_says_so_in_its_config(tmp_path):
    from reproduce.cli import resolve_config
    from reproduce.train import train

    cfg = resolve_config("debug", None, ["device_data=true", "auto_augment=", "color_jitter=0", "epochs=1"])
    record = train(cfg, tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    assert record.settings.config["device_data"] is True and record.metrics.final_val_top1 is not None
