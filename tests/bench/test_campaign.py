"""`bench campaign`: a plan of child processes within a budget, one archive, continued by a second call. The real
plan's dry run (debug models, about a minute) runs in `.ci/run`; these tests drive the runner with quick steps."""

import json
import tarfile

import pytest

from bench import campaign, cli
from bench.campaign import Step


def fake_plan(work, *, device, dry_run, timm_benchmark):
    write = f"import pathlib; p = pathlib.Path({str(work / 'records')!r}); p.mkdir(exist_ok=True); "
    return [
        Step("quick", ("-c", write + "(p / 'a.json').write_text('{}')"), 1, "a step that works"),
        Step("broken", ("-c", "raise SystemExit('no GPU here')"), 1, "a step that fails"),
        Step("absent", (), 0, "a step that cannot run", unavailable="no benchmark.py given"),
        Step("long", ("-c", "import time; time.sleep(60)"), 500, "a step that does not fit"),
        Step("suite", ("-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(3)); "
                             "time.sleep(60)"), 1, "a resumable step stopped by the budget", resumable=True),
    ]


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(campaign, "MIN_RESUMABLE_S", 1)


@pytest.fixture(scope="module")
def first_call(tmp_path_factory):
    """One campaign call of the quick plan within 6 s (shared: each call waits out its budget)."""
    out = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(campaign, "plan", fake_plan)
        patch.setattr(campaign, "MIN_RESUMABLE_S", 1)
        state = campaign.run(out, device="cpu", budget_s=6, dry_run=True, timm_benchmark=None, previous=None,
                             log=lambda msg: None)
    return out, state


def test_a_campaign_runs_what_fits_records_why_the_rest_did_not_and_packs_one_archive(first_call):
    out, state = first_call
    status = {name: o.status for name, o in state.outcomes.items()}
    assert status == {"quick": "done", "broken": "failed", "absent": "unavailable", "long": "deferred",
                      "suite": "stopped"}
    assert "no GPU here" in state.outcomes["broken"].note and state.outcomes["suite"].rc == 3  # SIGTERM reached it
    with tarfile.open(out / "campaign.tar.gz") as tar:
        names = tar.getnames()
        saved = json.load(tar.extractfile("campaign.json"))
    assert {"records/a.json", "logs/broken.log", "campaign.json"} <= set(names)
    assert saved["outcomes"]["long"]["status"] == "deferred"


def test_continue_runs_only_what_the_first_call_did_not_finish(tmp_path, monkeypatch, first_call):
    monkeypatch.setattr(campaign, "plan", fake_plan)
    first = first_call[0] / "campaign.tar.gz"
    lines = []
    state = campaign.run(tmp_path / "second", device="cpu", budget_s=2, dry_run=True, timm_benchmark=None,
                         previous=first, log=lines.append)
    assert "[1/5] quick: done in an earlier call" in lines and state.outcomes["quick"].status == "done"
    with pytest.raises(cli.UsageError, match="device=cpu, dry_run=True"):
        campaign.run(tmp_path / "third", device="cuda", budget_s=6, dry_run=False, timm_benchmark=None,
                     previous=first, log=lambda msg: None)


@pytest.mark.parametrize("argv,message", [
    (["--device", "cpu"], "on a CPU run it with --dry-run"),
    (["--dry-run", "--device", "cpu", "--budget-s", "5"], "--budget-s must be at least 60"),
    (["--dry-run", "--device", "tpu"], "--device 'tpu'"),
    (["--dry-run", "--device", "cpu", "--timm-benchmark", "/nonexistent/benchmark.py"], "no such file"),
    (["--dry-run", "--device", "cpu", "--continue", "/nonexistent/c.tar.gz"], "no such archive"),
])
def test_bad_campaign_requests_are_usage_errors(tmp_path, capsys, argv, message):
    assert cli.main(["campaign", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_dry_run_plan_mirrors_the_gpu_plan_step_for_step(tmp_path):
    gpu = campaign.plan(tmp_path, device="cuda", dry_run=False, timm_benchmark=tmp_path / "benchmark.py")
    dry = campaign.plan(tmp_path, device="cpu", dry_run=True, timm_benchmark=tmp_path / "benchmark.py")
    for kind in ("paper_protocol_", "best_", "timm_benchmark_", "training_step", "table3_"):
        assert any(s.name.startswith(kind) for s in gpu) and any(s.name.startswith(kind) for s in dry), kind
    assert sum(s.name.startswith("paper_protocol_") for s in gpu) == 8 and gpu[-1].resumable
