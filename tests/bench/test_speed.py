import time

import pytest
import torch
from torch import nn

from bench import speed
from bench.registry import VARIANTS
from bench.speed import PRECISIONS, Batch, Timing, check_precision, find_max_batch, precision_mode, time_forward

FP32 = PRECISIONS["fp32"]


class Sleeper(nn.Module):
    """A model whose cost is known: each forward takes at least `seconds`; it counts its calls."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.calls, self.inference = seconds, 0, []

    def forward(self, x):
        self.calls += 1
        self.inference.append(torch.is_inference_mode_enabled())
        time.sleep(self.seconds)
        return x


def test_the_timer_measures_a_forward_of_known_cost():
    model = Sleeper(0.02)
    timing = time_forward(model, Batch(4, 8, "cpu", FP32), warmup=2, iters=5)
    assert model.calls == 2 + 5 and len(timing.samples_s) == 5
    assert all(0.02 <= s < 0.5 for s in timing.samples_s)
    assert timing.img_per_s("median") == pytest.approx(4 / timing.median_s)
    assert timing.timer == "perf_counter"


def test_every_forward_runs_in_inference_mode():
    model = Sleeper(0)
    time_forward(model, Batch(1, 8, "cpu", FP32), warmup=1, iters=2)
    assert model.inference == [True, True, True]


def test_the_monitor_brackets_only_the_timed_iterations():
    model, seen = Sleeper(0), []

    class Monitor:
        def __enter__(self):
            seen.append(("enter", model.calls))

        def __exit__(self, *exc):
            seen.append(("exit", model.calls))

    time_forward(model, Batch(1, 8, "cpu", FP32), warmup=3, iters=4, monitor=Monitor())
    assert seen == [("enter", 3), ("exit", 7)]


def test_peak_memory_is_read_on_cpu():
    timing = time_forward(Sleeper(0), Batch(1, 8, "cpu", FP32), warmup=0, iters=1)
    assert timing.peak_mem_kind == "process_peak_rss" and timing.peak_mem_mib > 0


def test_statistics_of_the_samples():
    timing = Timing(batch_size=10, samples_s=(0.1, 0.2, 0.3, 0.4, 10.0), timer="perf_counter",
                    peak_mem_mib=None, peak_mem_kind=None)
    assert timing.median_s == 0.3 and timing.mean_s == pytest.approx(2.2)
    assert timing.img_per_s("median") == pytest.approx(10 / 0.3)
    assert timing.img_per_s("mean") == pytest.approx(10 / 2.2)
    assert timing.quantile_s(0.25) == pytest.approx(0.2) and timing.quantile_s(1.0) == 10.0
    assert timing.quantile_s(0.875) == pytest.approx(0.4 + 0.5 * 9.6)


def test_bad_loop_counts_are_refused():
    with pytest.raises(ValueError, match="iters >= 1"):
        time_forward(Sleeper(0), Batch(1, 8, "cpu", FP32), warmup=0, iters=0)


@pytest.mark.parametrize("limit,cap,expected", [(37, 4096, 37), (1, 4096, 1), (4096, 4096, 4096),
                                                (300, 256, 256), (1000, 1000, 1000)])
def test_max_batch_search_finds_the_largest_that_fits(limit, cap, expected):
    probes = []

    def fits(b):
        probes.append(b)
        return b <= limit

    assert find_max_batch(fits, cap=cap) == expected
    assert len(probes) <= 2 * 13  # doubling then bisection: logarithmic


def test_max_batch_search_fails_clearly_when_nothing_fits():
    with pytest.raises(RuntimeError, match="batch size 1"):
        find_max_batch(lambda b: False, cap=64)


def test_fp16_and_tf32_are_refused_on_cpu():
    for name in ("fp16", "amp_fp16", "tf32"):
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            check_precision(name, "cpu")
    with pytest.raises(ValueError, match="accepted: fp32, tf32"):
        check_precision("fp8", "cpu")


def test_autocast_precision_runs_matmuls_in_bf16_and_restores_tf32_flags():
    before = torch.backends.cuda.matmul.allow_tf32
    with precision_mode(PRECISIONS["amp_bf16"], "cpu"):
        out = nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    with precision_mode(PRECISIONS["tf32"], "cpu"):
        assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_pure_bf16_weights_time_on_cpu():
    from bench.registry import VARIANTS

    model = VARIANTS["debug"].build().eval().to(torch.bfloat16)
    timing = time_forward(model, Batch(2, 32, "cpu", PRECISIONS["bf16"]),
                          warmup=1, iters=2)
    assert len(timing.samples_s) == 2


@pytest.mark.gpu
def test_cuda_timing_uses_events_and_reports_allocated_peak():
    from bench.registry import VARIANTS

    model = VARIANTS["debug"].build().eval().cuda()
    timing = time_forward(model, Batch(8, 32, "cuda", FP32), warmup=2, iters=3)
    assert timing.timer == "cuda_event" and timing.peak_mem_kind == "cuda_max_allocated"


def tiny_relative_timing(monkeypatch=None, busy=False, budget_s=0.0, rounds=4):
    from bench import speed

    if monkeypatch is not None:
        monkeypatch.setattr(speed, "is_contended", lambda *load, cuda: busy)
    model = VARIANTS["debug"].build().eval()
    return speed.time_interleaved(model, speed.ReferenceEncoder(2), speed.Batch(2, 32, "cpu", FP32), rounds=rounds,
                                  warmup=1, budget_s=budget_s)


def test_relative_timing_times_cpu_time_and_records_the_load_of_every_round():
    timing = tiny_relative_timing()
    assert timing.clock == "process_cpu_time" and len(timing.ratios) == 4
    assert all(len(column) == 4 for column in (timing.model_wall_s, timing.other_cores, timing.steal, timing.cpu_share))
    assert all(r > 0 for r in timing.ratios) and all(0 <= share <= 2.5 for share in timing.cpu_share)


def test_contended_rounds_are_retaken_within_the_budget_and_not_beyond(monkeypatch):
    start = time.perf_counter()
    assert len(tiny_relative_timing(monkeypatch, busy=True, budget_s=0.0).ratios) == 4
    four_rounds = time.perf_counter() - start  # build and warm-up included: more than the rounds alone
    budget = 3 * four_rounds  # sized by this machine's speed now, so a busy CI machine times the same test
    start = time.perf_counter()
    retaken = tiny_relative_timing(monkeypatch, busy=True, budget_s=budget)
    assert len(retaken.ratios) > 4 and time.perf_counter() - start < budget + 2 * four_rounds
    assert len(tiny_relative_timing(monkeypatch, busy=False, budget_s=30.0).ratios) == 4  # quiet: no extra rounds


def test_machine_load_counts_other_processes_busy_cores_without_our_own_time():
    from bench.speed import MachineLoad

    start = MachineLoad(wall_s=0.0, own_cpu_s=0.0, busy_s=100.0, steal_s=5.0, total_s=1000.0)
    end = MachineLoad(wall_s=2.0, own_cpu_s=1.8, busy_s=104.8, steal_s=5.0, total_s=1004.0)  # 2 cores x 2 s
    others, steal, share = end.since(start)
    assert others == pytest.approx(1.5) and steal == 0 and share == pytest.approx(0.9)


def test_an_unreadable_proc_stat_leaves_the_load_unknown_not_quiet(monkeypatch, tmp_path, capsys):
    """A hostile pass: /proc/stat masked (or garbled) recorded a machine with a busy core as quiet, 0.0 other cores."""
    import json

    from bench import cli
    from bench.load import MachineLoad

    start, end = (MachineLoad.parse(t, t, "") for t in (0.0, 1.0))
    assert end.since(start) == (None, None, 1.0)
    assert MachineLoad.parse(0.0, 0.0, "cpu garbage") == MachineLoad(0.0, 0.0, None, None, None)
    monkeypatch.setattr(MachineLoad, "now", classmethod(
        lambda cls, own_cpu_s=None: cls.parse(time.perf_counter(), time.process_time(), "")))
    assert cli.main(["run", "--variant", "debug", "--metrics", "speed", "--warmup", "1", "--iters", "2",
                     "--results-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.rglob("*.json")
    metrics = json.loads(path.read_text())["metrics"]
    assert metrics["timed_other_cores"] is None and metrics["timed_busy"] is None
    assert "/proc/stat could not be read" in capsys.readouterr().out


@pytest.mark.parametrize("load,contended", [((0.05, 0.0, 0.99), False), ((1.3, 0.0, 0.99), True),
                                            ((0.0, 0.05, 0.99), True), ((0.0, 0.0, 0.6), True)])
def test_a_round_is_contended_when_others_use_a_core_the_hypervisor_steals_or_we_lose_our_core(load, contended):
    from bench.speed import is_contended

    assert is_contended(*load, cuda=False) is contended


def test_a_forward_timed_beside_a_busy_process_says_so():
    """A plain `bench run` on a busy machine printed a tight IQR and no warning (hostile pass, 94x slower)."""
    import subprocess
    import sys

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        timing = time_forward(Sleeper(0.05), Batch(1, 8, "cpu", FP32), warmup=0, iters=10)
    finally:
        burner.kill()
        burner.wait()
    assert timing.other_cores > 0.5 and timing.busy
    quiet = Timing(1, (0.1,), "perf_counter", None, None, other_cores=0.02, steal=0.0)
    assert not quiet.busy and not Timing(1, (0.1,), "perf_counter", None, None).busy  # unknown load: not busy
    assert not Timing(1, (0.1,), "cuda_event", None, None, other_cores=3.0, steal=0.0).busy  # GPU: not the CPUs' say


@pytest.mark.parametrize("compile_mode, recompiles, error", [
    ("off", 0, torch.cuda.OutOfMemoryError("CUDA out of memory")),
    ("reduce-overhead", 1, torch.cuda.OutOfMemoryError("CUDA out of memory")),
    ("max-autotune", 1, RuntimeError("BackendCompilerFailed: backend='inductor' raised: CUDA out of memory")),
])
def test_an_out_of_memory_under_batch_max_backs_off_and_frees_a_compiled_models_graphs(monkeypatch, compile_mode,
                                                                                        recompiles, error):
    """CUDA graphs keep their memory pools through torch.cuda.empty_cache(): without dynamo's reset, every smaller
    batch after an out-of-memory would run out as well."""
    import types

    from bench import compiling, run, speed

    calls = {"compiled": 0, "reset": 0, "batches": []}

    def compiled(model, mode):
        calls["compiled"] += 1
        return model

    def time_forward(runner, batch, **kwargs):
        calls["batches"].append(batch.size)
        if len(calls["batches"]) == 1:
            raise error  # compiling, inductor wraps it in BackendCompilerFailed
        return "timing"

    monkeypatch.setattr(speed, "cuda_batch_fits", lambda *a, **k: None)
    monkeypatch.setattr(speed, "find_max_batch", lambda fits, cap: 100)
    monkeypatch.setattr(speed, "time_forward", time_forward)
    monkeypatch.setattr(compiling, "compiled", compiled)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.__setitem__("reset", calls["reset"] + 1))
    settings = types.SimpleNamespace(batch_size="max", max_batch_cap=4096, img_size=32, device="cpu",
                                     precision="fp32", compile_mode=compile_mode, warmup=3, iters=2)
    timing, readings = run._time(nn.Identity(), VARIANTS["debug"], settings, log=lambda m: None)
    assert timing == "timing" and calls["batches"] == [100, 90]
    assert (calls["compiled"], calls["reset"]) == (1 + recompiles, recompiles)


def test_cudnns_autotuner_is_on_while_a_gpu_is_timed_as_timm_sets_it_and_restored_after():
    """A hostile pass: timm's benchmark.py and the official main.py time with `cudnn.benchmark` on; we did not."""
    before = torch.backends.cudnn.benchmark
    with speed.cudnn_autotuned(True):
        assert torch.backends.cudnn.benchmark
    with speed.cudnn_autotuned(False):  # a CPU run leaves the setting as the caller had it
        assert torch.backends.cudnn.benchmark == before
    assert torch.backends.cudnn.benchmark == before
