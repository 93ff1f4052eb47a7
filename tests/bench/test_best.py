"""`bench run --best` (bench/best.py): what it tries, what it refuses to choose, and what the record says."""

import json

import pytest
import torch
from helpers import folder_tree
from torch import nn

from bench import best, cli
from bench.machine import Fingerprint


def _candidate(precision="bf16", compile="off", batch=4):
    return best.Candidate(precision, compile, batch)


def test_identical_logits_agree():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    agreement = best.compare(logits, logits.clone(), _candidate(), "test")
    assert agreement.top1_agreement == 1 and agreement.median_rel_error == 0 and agreement.passed


def test_a_flip_on_a_near_tie_is_allowed_and_a_confident_flip_is_not():
    reference = torch.tensor([[5.0, 4.999, 0.0, 0.0], [5.0, 1.0, 0.0, 0.0]])
    near_tie = reference.clone()
    near_tie[0, 1] = 5.001  # the near tie flips: a bf16 rounding can do this
    agreement = best.compare(reference, near_tie, _candidate(), "test")
    assert (agreement.near_tie_flips, agreement.confident_flips, agreement.passed) == (1, 0, True)
    assert agreement.top1_agreement == 0.5
    confident = reference.clone()
    confident[1] = torch.tensor([1.0, 5.0, 0.0, 0.0])  # a margin of 4 in logits of RMS 2.6 reversed: wrong
    agreement = best.compare(reference, confident, _candidate(), "test")
    assert agreement.confident_flips == 1 and not agreement.passed


def test_logits_further_off_than_the_precision_allows_fail_even_without_a_flip():
    reference = torch.tensor([[5.0, 1.0, 0.0, 0.0]] * 4)
    off = reference * 1.2  # same top-1 everywhere, 20 % relative error
    assert not best.compare(reference, off, _candidate("bf16"), "test").passed
    assert not best.compare(reference, reference * 1.001, _candidate("fp32"), "test").passed  # fp32 allows 1e-4
    assert best.compare(reference, reference * 1.001, _candidate("amp_bf16"), "test").passed


def _fingerprint(device="cpu", isa=(), capability=None):
    return Fingerprint(device=device, cpu_vendor="v", cpu_family="1", cpu_model="2", cpu_stepping="3", cpu_name="cpu",
                       isa=tuple(isa), cores=2, threads=2, torch="2", timm="1", cpu_capability="AVX2",
                       gpu_name="gpu" if device == "cuda" else None, gpu_capability=capability)


def test_only_precisions_the_hardware_runs_natively_are_searched():
    assert best.precisions(_fingerprint()) == ("fp32",)  # emulated bf16 is slower, never a candidate
    assert best.precisions(_fingerprint(isa=("avx512_bf16",))) == ("fp32", "amp_bf16", "bf16")
    assert "bf16" in best.precisions(_fingerprint("cuda", capability="9.0"))
    assert "bf16" not in best.precisions(_fingerprint("cuda", capability="7.0"))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.GELU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class _FastAndWrong(nn.Module):
    """What a broken compiler could hand back: instant, and the wrong answer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.zeros(len(x), 10, dtype=x.dtype).index_fill_(1, torch.tensor([3]), 1.0)


def _space(**changes):
    fields = dict(precisions=("fp32",), compile_modes=("off", "default"), attentions=("sdpa",), batch_size=4, batch_fixed=True, max_batch=8,
                  img_size=8, device="cpu")
    return best.Space(**{**fields, **changes})


def test_the_fastest_setting_is_not_chosen_when_its_answers_differ_from_fp32_eager(monkeypatch):
    real = best.compiled
    monkeypatch.setattr(best, "compiled", lambda m, mode: _FastAndWrong(m) if mode == "default" else real(m, mode))
    model = _Tiny().eval()
    inputs = (torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)), "noise")
    found = best.search(model, _space(), budget_s=60, check_inputs=inputs, log=lambda m: None)
    assert found.chosen == best.Candidate("fp32", "off", 4)
    rejected = [a for a in found.agreements if not a.passed]
    assert [a.candidate.compile for a in rejected] == ["default"] and found.agreements[-1].passed


def test_nothing_is_chosen_when_nothing_agrees(monkeypatch):
    monkeypatch.setattr(best, "compiled", lambda m, mode: _FastAndWrong(m))
    inputs = (torch.randn(4, 3, 8, 8), "noise")
    with pytest.raises(best.NothingAgrees, match="no setting the search timed gives fp32 eager's answers"):
        best.search(_Tiny().eval(), _space(compile_modes=("off",)), budget_s=60, check_inputs=inputs,
                    log=lambda m: None)


def test_fp32_eager_is_the_last_resort_even_where_it_was_not_searched(monkeypatch):
    real = best.compiled  # a GPU searches tf32, not fp32: every timed setting here is bf16 and wrong
    monkeypatch.setattr(best, "compiled", lambda m, mode: _FastAndWrong(m) if next(m.parameters()).dtype
                        == torch.bfloat16 else real(m, mode))
    inputs = (torch.randn(4, 3, 8, 8), "noise")
    found = best.search(_Tiny().eval(), _space(precisions=("bf16",)), budget_s=60, check_inputs=inputs,
                        log=lambda m: None)
    assert found.chosen == best.Candidate("fp32", "off", 4)
    assert all(t.candidate.precision == "bf16" for t in found.trials)  # chosen untimed: bench run times it
    assert [a.passed for a in found.agreements] == [False, False, True]


def test_a_spent_budget_skips_the_rest_and_the_batch_stage_halves_and_doubles(monkeypatch):
    model = _Tiny().eval()
    inputs = (torch.randn(4, 3, 8, 8), "noise")
    found = best.search(model, _space(compile_modes=("off",), batch_fixed=False), budget_s=60, check_inputs=inputs,
                        log=lambda m: None)
    batches = [t.candidate.batch_size for t in found.trials if t.stage == "batch"]
    assert batches[:2] == [2, 8] and max(batches) <= 8  # half, then doubling up to --max-batch-cap
    spent = best.search(model, _space(precisions=("fp32", "fp32")), budget_s=1e-9, check_inputs=inputs,
                        log=lambda m: None)
    statuses = [t.status for t in spent.trials]
    assert statuses == ["timed", "skipped: budget", "skipped: budget"]  # the first always runs: something to check


def test_a_trial_that_fails_is_recorded_and_the_search_goes_on(monkeypatch):
    real = best.compiled

    def broken(model, mode):
        if mode == "default":
            raise RuntimeError("inductor could not build this\nmore detail")
        return real(model, mode)

    monkeypatch.setattr(best, "compiled", broken)
    found = best.search(_Tiny().eval(), _space(), budget_s=60, check_inputs=(torch.randn(4, 3, 8, 8), "noise"),
                        log=lambda m: None)
    failed = [t for t in found.trials if t.candidate.compile == "default"]
    assert failed[0].status == "failed: RuntimeError: inductor could not build this"
    assert found.chosen.compile == "off"


def _run(capsys, *argv):
    code = cli.main(["run", "--device", "cpu", "--json", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_bench_run_best_records_every_setting_tried_and_checks_the_chosen_one_on_real_images(capsys, tmp_path):
    data = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    code, record, err = _run(capsys, "--variant", "debug", "--best", "8", "--metrics", "size,speed", "--data",
                             str(data), "--iters", "2", "--warmup", "1", "--results-dir", str(tmp_path / "r"))
    assert code == 0, err
    search, settings = record["settings"]["search"], record["settings"]
    assert {"precision", "compile"} <= {t["stage"] for t in search["trials"]}
    assert all(t["status"] in ("timed", "skipped: budget") or t["status"].startswith("failed") for t in search["trials"])
    chosen = search["chosen"]
    assert (settings["precision"], settings["compile_mode"], settings["batch_size"]) == (
        chosen["precision"], chosen["compile"], chosen["batch_size"])
    check = search["agreement"][-1]
    assert check["passed"] and check["images"] == 10 and str(data) in check["inputs"]
    assert search["weights"] == "random initialisation"
    batch_timed = any(t["stage"] == "batch" and t["status"] == "timed" for t in search["trials"])
    assert settings["batch_policy"] == ("searched" if batch_timed else "not searched: budget")  # it said searched
    assert isinstance(search["busy"], bool)
    assert record["metrics"]["infer_img_per_s"] > 0
    # bench tables: its own table, never a cell of the protocol's columns (it was not timed as the protocol times)
    from bench import tables
    from bench.record import load_records

    records = load_records(tmp_path / "r")
    best_table = tables.table_best(records).frame
    assert best_table["model"].tolist() == ["debug"] and best_table["settings tried"].tolist() == [
        str(sum(t["stage"] != "confirm" for t in search["trials"]))]
    assert best_table["top-1 agreement with fp32 eager"][0].endswith("10 real images, random weights: numerics only")
    assert not tables.timed_as_protocol(records[0])
    # a newer search on a busy machine never replaces a quiet one; alone, its row says it was busy
    import dataclasses

    made = records[0]  # the machine running this test may itself be busy: make each side what it claims
    quiet = dataclasses.replace(made, settings={**made.settings, "search": {**made.settings.search, "busy": False}},
                                metrics={**made.metrics, "timed_busy": False})
    busy = dataclasses.replace(quiet, settings={**quiet.settings, "search": {**quiet.settings.search, "busy": True}},
                               env={**quiet.env, "created": "2099-01-01T00:00:00+00:00"})
    assert "busy" not in tables.table_best([quiet, busy]).frame["setting"][0]
    assert "busy machine" in tables.table_best([busy]).frame["setting"][0]
    assert tables._speed_columns(records, [("debug", 32)])[1] == []


@pytest.mark.parametrize("argv, message", [
    (["--best", "--compile"], "--best chooses how to compile"),
    (["--best", "--protocol", "paper", "--batch-size", "2"], "use --protocol timm"),
    (["--best", "--metrics", "relspeed"], "--metrics must include speed and not relspeed"),
    (["--best", "0"], "--best must be a finite number >= 1"),
    (["--compile", "reduce-overhead"], "needs --device cuda"),
    (["--compile", "freezing", "--metrics", "relspeed"], "is not gated"),
    (["--compile", "--warmup", "0"], "--warmup must be at least 1"),
    (["--compile", "freezing", "--metrics", "size"], "--metrics size times none"),  # it recorded compile: true
    (["--best", "--warmup", "0"], "--warmup must be at least 1"),
    (["--best", "1e308"], "--best takes at most 86400 seconds"),
    (["--best", "--data", "/nonexistent/images"], "--data /nonexistent/images is not a folder"),
])
def test_impossible_searches_and_modes_are_usage_errors(capsys, tmp_path, argv, message):
    code, _, err = _run(capsys, "--variant", "debug", *argv, "--results-dir", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))


def test_an_unknown_compile_mode_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--variant", "debug", "--compile", "fast"])
    assert exit_.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err


def test_weights_cast_for_timing_leave_the_accuracy_pass_its_full_precision_weights():
    """--best may time bf16 weights while accuracy is evaluated in fp32: the cast is made on a copy, so the
    accuracy pass never reads weights rounded to bf16 and back."""
    import dataclasses

    from bench.registry import VARIANTS
    from bench.run import _timed_copy, resolve_settings

    settings = resolve_settings(VARIANTS["debug"], device="cpu", precision="fp32", batch_size=2, metrics="speed,accuracy")
    model = nn.Linear(3, 3)
    before = model.weight.detach().clone()
    timed = _timed_copy(model, dataclasses.replace(settings, precision="bf16"))
    assert timed is not model and timed.weight.dtype == torch.bfloat16
    assert model.weight.dtype == torch.float32 and torch.equal(model.weight, before)
    assert _timed_copy(model, settings) is model  # nothing to lose: cast (here: kept) in place


def test_attention_asked_of_a_convnet_is_refused_also_with_a_search(capsys, tmp_path):
    """`--best --attention matmul` on a convnet once noted '--attention none' (the search's word); then it was recorded
    and changed nothing (a hostile pass). It is refused before the search."""
    code = cli.main(["run", "--variant", "cifar_resnet10", "--best", "1", "--attention", "matmul", "--batch-size",
                     "2", "--iters", "1", "--warmup", "1", "--results-dir", str(tmp_path)])
    assert code == 2 and "cifar_resnet10 has none" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("changes", [dict(compile=True, compile_mode="max-autotune", warmup=2),
                                     dict(compile=True, compile_mode="reduce-overhead", warmup=1),
                                     dict(best_s=60.0, warmup=2)])
def test_cuda_graphs_are_never_timed_while_they_record(monkeypatch, changes):
    from bench import run
    from bench.registry import VARIANTS

    monkeypatch.setattr(run, "resolve_device", lambda device: "cuda")  # the check comes before the GPU is touched
    with pytest.raises(ValueError, match="replayed from the third: --warmup must be at least 3"):
        run.resolve_settings(VARIANTS["debug"], device="cuda", metrics="speed", **changes)
    monkeypatch.setattr(run, "resolve_device", lambda device: "cpu")  # no CUDA graphs on a CPU: one warm-up will do
    if changes.get("compile_mode") != "reduce-overhead":
        assert run.resolve_settings(VARIANTS["debug"], device="cpu", metrics="speed", **changes).warmup == \
            changes["warmup"]
