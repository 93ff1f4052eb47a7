"""Issue #21: the device data path against the preloaded per-image path at mini scale, side by side (opt-in):

    pytest tests/benchmarks/test_device_data_speed.py -m benchmark -s

On a CPU the mini training is compute-bound, so the target is only "no slower" (>= 0.95x); the gain is for a GPU.
Both paths train mini_none on 2,048 CIFAR-10 images for 2 epochs (the second timed), alternated twice.
"""

import statistics

import pytest

from reproduce.cli import resolve_config
from reproduce.train import train

pytestmark = pytest.mark.benchmark
SETS = ["train_subset=2048", "epochs=2", "eval_every=100", "val_subset=200"]


def img_per_s(tmp_path, name, extra):
    cfg = resolve_config("mini_none", None, [*SETS, *extra])
    record = train(cfg, tmp_path / name, experiment="mini_none", resume=False, log=lambda _: None)
    return record.metrics.train_img_per_s


def test_the_device_path_is_no_slower_than_the_preloaded_one_on_a_cpu(tmp_path):
    ratios = []
    for round_ in range(2):
        pil = img_per_s(tmp_path, f"pil{round_}", [])
        device = img_per_s(tmp_path, f"device{round_}", ["device_data=true"])
        ratios.append(device / pil)
        print(f"round {round_}: preloaded PIL path {pil:.1f} img/s, device path {device:.1f} img/s, "
              f"ratio {device / pil:.3f}")
    assert statistics.median(ratios) >= 0.95
