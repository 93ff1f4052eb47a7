"""Issue #3's target, measured side by side: the evaluation loop (JPEG decode, transform, 2 workers, scoring)
against the pure forward of the same model on the same batches, alternated so both see the same machine.

Not part of the default run (~2 minutes). Run with:
    pytest tests/benchmarks/test_eval_throughput.py -m benchmark -s
"""

import statistics
import tarfile
import time
from pathlib import Path

import pytest
import torch

from bench import data
from bench.evaluate import timed_predict
from bench.registry import VARIANTS
from bench.speed import PRECISIONS

pytestmark = pytest.mark.benchmark
ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="module")
def cifar_test_images(tmp_path_factory):
    if not ARCHIVE.exists():
        pytest.skip(f"needs the real CIFAR-10 JPEGs at {ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(ARCHIVE) as tar:
        members = [m for m in tar if m.name.startswith("test/") and m.isfile()][:5120]
        tar.extractall(root, members=members, filter="data")
    return root / "test"


@pytest.mark.parametrize("variant,batch", [("cifar_resnet10", 256)])
def test_eval_loop_throughput_against_pure_forward(cifar_test_images, variant, batch):
    model = VARIANTS[variant].build().eval()
    samples, _ = data.find_samples(cifar_test_images)
    prep = data.preprocess(model, 32, "official", crop_pct=1.0)
    dataset = data.ImageList(samples, data.build_transform(prep, normalize=False))
    images = torch.randn(batch, 3, 32, 32)

    def forward_img_per_s(batches: int) -> float:
        with torch.inference_mode():
            model(images)  # like the eval loop's first batch, not counted
            start = time.perf_counter()
            for _ in range(batches):
                model(images).topk(5, dim=-1)
        return batches * batch / (time.perf_counter() - start)

    forward_img_per_s(2)
    rows = []
    for _ in range(5):
        forward = forward_img_per_s(len(samples) // batch - 1)
        _, speed = timed_predict(model, dataset, prep, distilled=False, precision=PRECISIONS["fp32"],
                                 batch_size=batch, workers=2, progress=False)
        rows.append((forward, speed.steady, speed.whole))
    ratio_steady = statistics.median(s / f for f, s, _ in rows)
    ratio_whole = statistics.median(w / f for f, _, w in rows)
    print(f"\n{variant} batch {batch}, {len(samples)} CIFAR-10 JPEGs, 2 workers, {torch.get_num_threads()} threads")
    for f, s, w in rows:
        print(f"  forward {f:7.1f} im/s   eval steady {s:7.1f} ({s / f:.3f})   eval whole {w:7.1f} ({w / f:.3f})")
    print(f"  median ratio: steady {ratio_steady:.3f}, whole {ratio_whole:.3f} (target >= 0.90)")
    assert ratio_steady >= 0.90
