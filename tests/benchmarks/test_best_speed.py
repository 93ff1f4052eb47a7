"""`bench run --best` against timm's benchmark.py at timm's best setting, side by side on the machine of the day.

For each model:
1. `bench run --variant V --best` chooses its setting (native precision, compile mode, batch) and records its search.
2. timm's benchmark.py at its best setting (`--amp --amp-dtype bfloat16 --torchcompile` where bf16 is native, else
   `--torchcompile`) is run once at batch 16 and once at our chosen batch; the faster batch is timm's.
3. `ROUNDS` paired rounds, each a fresh process of ours (`bench run` at the chosen setting, no search) and a fresh
   process of timm's, the order alternating; the same warm-up and timed iterations on both sides and the same
   statistic (images over the whole timed loop: timm's `samples_per_sec`, our `infer_img_per_s_mean`).
4. The speed-up is the Hodges–Lehmann estimate of the per-round log ratio, with its exact 95 % signed-rank interval
   (bench/stats.py), so a machine whose speed drifts between rounds slows both sides of a round alike.

Targets: on a CPU with native bf16, DeiT-B ≥ 1.2x timm's best and ≥ 70 % of the measured bf16 GEMM peak, DeiT-Ti
≥ 1.2x; on an fp32-only CPU, ≥ 1.0x and ≥ 70 % of the fp32 peak (DeiT-B). Results go to $BEST_SPEED_OUT/<variant>.json.
Needs timm's benchmark.py (not in timm's pip package): TIMM_BENCHMARK=/path/to/pytorch-image-models/benchmark.py.
Not part of the default run; DeiT-B takes about 15 minutes on 2 cores, DeiT-Ti about 6:
    TIMM_BENCHMARK=... BEST_SPEED_OUT=DIR pytest tests/benchmarks/test_best_speed.py -m benchmark -s
    python tests/benchmarks/test_best_speed.py DIR        # the table of docs/benchmarking.md
"""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import machine
from bench.record import collect_env, cpu_model
from bench.stats import hodges_lehmann

pytestmark = pytest.mark.benchmark
ROUNDS = int(os.environ.get("BEST_SPEED_ROUNDS", 6))  # 6: the fewest with a 95 % signed-rank interval
WARMUP, ITERS = 3, 10
TIMM = os.environ.get("TIMM_BENCHMARK")
CASES = {  # variant: (timm model, speed-up target over timm's best, share of the measured GEMM peak or None)
    "deit_b": ("deit_base_patch16_224", 1.2, 0.70),
    "deit_ti": ("deit_tiny_patch16_224", 1.2, None),
}


@pytest.mark.skipif(not TIMM, reason="set TIMM_BENCHMARK to timm's benchmark.py (a timm checkout)")
@pytest.mark.parametrize("variant", list(CASES))
def test_best_beats_timms_best(variant, tmp_path):
    native = machine.detect("cpu").native_bf16
    timm_model, target, peak_share = CASES[variant]
    if not native:
        target = 1.0
        peak_share = 0.70 if variant == "deit_b" else None
    search = _ours(["--variant", variant, "--best", "--metrics", "size,speed"], tmp_path)
    chosen = search["settings"]["search"]["chosen"]
    ours_args = ["--variant", variant, "--precision", chosen["precision"], "--batch-size", str(chosen["batch_size"]),
                 "--metrics", "size,speed", "--warmup", str(WARMUP), "--iters", str(ITERS)]
    ours_args += ([] if chosen["compile"] == "off" else ["--compile", chosen["compile"]]) + [
        "--attention", chosen["attention"]]
    timm_flags = ["--amp", "--amp-dtype", "bfloat16", "--torchcompile"] if native else ["--torchcompile"]
    batches = sorted({16, chosen["batch_size"]})
    timm_batch = max(batches, key=lambda b: _timm(timm_model, timm_flags, b))
    rounds = []
    for i in range(ROUNDS):
        pair = {}
        for side in (("ours", "timm") if i % 2 == 0 else ("timm", "ours")):
            if side == "ours":
                record = _ours(ours_args, tmp_path)
                pair["ours"], pair["mfu"] = record["metrics"]["infer_img_per_s_mean"], record["metrics"]["mfu_measured"]
            else:
                pair["timm"] = _timm(timm_model, timm_flags, timm_batch)
        rounds.append(pair)
        print(f"{variant} round {i + 1}: ours {pair['ours']:.2f} im/s, timm {pair['timm']:.2f} im/s", flush=True)
    shift = hodges_lehmann([math.log(r["ours"] / r["timm"]) for r in rounds])
    mfus = [r["mfu"] for r in rounds if r["mfu"] is not None]
    mfu = statistics.median(mfus) if mfus else None
    result = {"variant": variant, "fingerprint": machine.detect("cpu").id(), "chosen": chosen,
              "search": search["settings"]["search"], "timm_flags": timm_flags, "timm_batch": timm_batch,
              "rounds": rounds, "speedup": math.exp(shift.estimate), "speedup_low": math.exp(shift.low),
              "speedup_high": math.exp(shift.high), "mfu_measured_median": mfu, "target": target,
              "peak_share_target": peak_share,
              # provenance, as a record's: commit, versions, machine, time; and how timm was run
              "env": collect_env(cpu_model()) | {"command": f"TIMM_BENCHMARK={TIMM} pytest {Path(__file__).name} "
                                                            f"-m benchmark -k {variant} (BEST_SPEED_ROUNDS={ROUNDS})",
                                                 "timm_benchmark": TIMM}}
    _save(variant, result)
    print(f"{variant}: ours/timm {result['speedup']:.3f} [{result['speedup_low']:.3f}, {result['speedup_high']:.3f}] "
          f"(target {target}); MFU {mfu}")
    assert result["speedup"] >= target, result
    if peak_share is not None:
        assert mfu is not None and mfu >= peak_share, result


def _ours(args: list[str], folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--json", "--results-dir", str(folder)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timm(model: str, flags: list[str], batch: int) -> float:
    done = subprocess.run([sys.executable, TIMM, "--model", model, "--bench", "inference", "--device", "cpu",
                           "-b", str(batch), "--num-warm-iter", str(WARMUP), "--num-bench-iter", str(ITERS), *flags],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.split("--result", 1)[1])
    return result["infer_samples_per_sec"]


def _save(variant: str, result: dict) -> None:
    out = os.environ.get("BEST_SPEED_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{variant}.json").write_text(json.dumps(result, indent=1) + "\n")


def table(folder: Path) -> str:
    """The side-by-side table of the results in `folder` (docs/benchmarking.md shows it)."""
    lines = ["| model | our choice | ours, im/s | timm's best, im/s | ours / timm [95 % interval] | target | "
             "MFU (measured peak) | search, s |", "|:--|:--|--:|--:|--:|--:|--:|--:|"]
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        c = r["chosen"]
        ours = statistics.median(x["ours"] for x in r["rounds"])  # the median, not the upper middle (an audit)
        timm = statistics.median(x["timm"] for x in r["rounds"])
        mfus = [x["mfu"] for x in r["rounds"] if x["mfu"] is not None]
        mfu = f"{100 * statistics.median(mfus):.0f} %" if mfus else ""
        lines.append(f"| {r['variant']} | {c['precision']}, compile {c['compile']}, {c['attention']} attention, batch "
                     f"{c['batch_size']} | {ours:.2f} | {timm:.2f} (batch "
                     f"{r['timm_batch']}) | {r['speedup']:.3f} [{r['speedup_low']:.3f}, {r['speedup_high']:.3f}] | "
                     f"≥ {r['target']} | {mfu} | {r['search']['spent_s']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
