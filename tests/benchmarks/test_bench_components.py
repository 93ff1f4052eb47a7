"""pytest-benchmark suite: not in the default run. See README, "Regression gate", for the commands.

Each benchmark stores its settings and images/s in `extra_info`, so saved runs can be compared with
`--benchmark-compare` on the same machine.
"""

import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.optim import create_optimizer_v2

from bench.registry import VARIANTS
from reproduce.distill import distillation_loss, teacher_logits

pytestmark = pytest.mark.benchmark(group="components", min_rounds=5, warmup=True)


def per_second(benchmark, items: int, **settings) -> None:
    benchmark.extra_info.update(settings, items_per_round=items,
                                img_per_s_median=items / benchmark.stats.stats.median)


@pytest.mark.parametrize("name,batch", [("debug", 64), ("deit_ti", 16)])
def test_model_forward(benchmark, name, batch):
    model = VARIANTS[name].build().eval()
    x = torch.randn(batch, 3, VARIANTS[name].img_size, VARIANTS[name].img_size)

    def forward():
        with torch.inference_mode():
            model(x)

    benchmark.pedantic(forward, rounds=10, warmup_rounds=2)
    per_second(benchmark, batch, variant=name, batch_size=batch, precision="fp32",
               threads=torch.get_num_threads())


def test_eval_transform_pipeline(benchmark, tmp_path):
    """JPEG decode + the timm eval transform of DeiT-Ti (resize 248, crop 224, normalise) per image."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(torch.randint(0, 256, (375, 500, 3), dtype=torch.uint8).numpy()).save(path, quality=90)
    config = resolve_data_config({}, model=VARIANTS["deit_ti"].build())
    transform = create_transform(**config)

    def load():
        with Image.open(path) as img:
            return transform(img.convert("RGB"))

    assert benchmark(load).shape == (3, 224, 224)
    per_second(benchmark, 1, crop_pct=config["crop_pct"], interpolation=config["interpolation"], size="500x375")


def test_distillation_loss(benchmark):
    batch, classes = 256, 1000
    cls, dist, teacher = (torch.randn(batch, classes) for _ in range(3))
    target = torch.softmax(torch.randn(batch, classes), dim=-1)  # mixed soft targets
    benchmark(distillation_loss, (cls, dist), teacher, target, mode="hard", alpha=0.5, tau=1.0, kl_norm="official")
    per_second(benchmark, batch, mode="hard", classes=classes)


def test_training_step(benchmark):
    """One step of hard distillation: frozen teacher forward, student forward/backward, AdamW update."""
    batch = 64
    student, teacher = VARIANTS["debug_dist"].build().train(), VARIANTS["cifar_resnet10"].build()
    optimizer = create_optimizer_v2(student, opt="adamw", lr=5e-4, weight_decay=0.05)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        loss = distillation_loss(student(images), teacher_logits(teacher, images), labels,
                                 mode="hard", alpha=0.5, tau=1.0, kl_norm="official")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    per_second(benchmark, batch, student="debug_dist", teacher="cifar_resnet10", mode="hard", batch_size=batch)
