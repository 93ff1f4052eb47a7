from pathlib import Path

import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp

from bench.data import DataError, ImageList
from reproduce.config import TrainConfig
from reproduce.data import SyntheticImages, balanced_subset, train_transform
from reproduce.sampling import ResumableSampler, SeededItems


def test_randaugment_posterize_at_full_magnitude_blackens_the_image_as_in_the_papers_runs():
    # rand-m9-mstd0.5-inc1 draws magnitude 10 now and then: 0 bits kept (Pillow >= 13 raises instead)
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    out = op(Image.new("RGB", (8, 8), (200, 100, 50)))
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_the_deit_augmentation_makes_normalised_tensors_of_the_training_size():
    transform = train_transform(TrainConfig(), 224)
    image = Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy())
    out = transform(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32 and out.min() < 0


def test_a_balanced_subset_takes_an_equal_share_per_class_and_depends_on_the_seed():
    samples = [(Path(f"{c}_{i}.jpg"), c) for c in range(10) for i in range(50)]
    subset = balanced_subset(samples, 105, seed=0)
    counts = [sum(1 for _, c in subset if c == k) for k in range(10)]
    assert len(subset) == 105 and counts == [11] * 5 + [10] * 5
    assert subset == balanced_subset(samples, 105, seed=0) != balanced_subset(samples, 105, seed=1)


def test_augmentation_depends_on_the_position_not_on_the_worker_or_the_resume_point():
    cfg = TrainConfig(auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    data = SeededItems(SyntheticImages(12, 3, 32, seed=0, transform=train_transform(cfg, 32)))

    class Fixed(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter([3, 3, 3, 7, 7, 7])

        def __len__(self):
            return 6

    sampler = ResumableSampler(Fixed(), seed=0, rank=0)
    sampler.set_epoch(0)
    full = [data[item][0] for item in sampler]
    sampler.set_epoch(0, start=4)
    resumed = [data[item][0] for item in sampler]
    assert all(torch.equal(a, b) for a, b in zip(full[4:], resumed))
    assert not torch.equal(full[0], full[1])  # repeated augmentation: the copies of image 3 differ


def test_cifar10_as_torchvision_downloads_it_gives_named_items_and_subsets(tmp_path, monkeypatch):
    import numpy as np
    import torchvision.datasets

    from reproduce.config import TrainConfig
    from reproduce.data import datasets

    class FakeCifar10:  # stands in for the download; the adapter reads only .data, .targets and .classes
        classes = ["airplane", "automobile"]

        def __init__(self, root, train, download):
            n = 20 if train else 6
            self.data = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 2 for i in range(n)]

    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar10)
    cfg = TrainConfig(dataset="cifar10", data=str(tmp_path), num_classes=2, train_subset=8, val_subset=4)
    train, val = datasets(cfg, train_transform(cfg, 32), lambda img: img)
    assert len(train) == 8 and len(val) == 4
    assert [label for _, label, _ in val.samples] == [0, 0, 1, 1]  # an equal share per class (#19 row 4)
    image, label, index = val[2]
    assert image.size == (32, 32) and label == 1 and index == 2
    assert val.samples[2][0].parent == Path("automobile") and val.classes == ("airplane", "automobile")


def test_preloaded_images_give_the_same_augmented_items_without_reading_the_files_again(tmp_path):
    cfg = TrainConfig(train_crop_scale=(0.35, 1.0))
    samples = []
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()).save(path)
        samples.append((path, i % 2))
    from_disk = SeededItems(ImageList(samples, train_transform(cfg, 32)))
    preloaded = SeededItems(ImageList(samples, train_transform(cfg, 32), preload=True))
    expected = [from_disk[(index, 100 + index)] for index in range(4)]
    for path, _ in samples:
        path.unlink()  # preloaded: decoded at construction, never opened again
    for index, (image, label, position) in enumerate(expected):
        got = preloaded[(index, 100 + index)]
        assert torch.equal(got[0], image) and got[1:] == (label, position) == (index % 2, index)
    with pytest.raises(DataError, match="0.jpg"):
        from_disk[(0, 100)]
