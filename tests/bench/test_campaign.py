"""`bench campaign`: a plan of child processes within a budget, one archive, continued by a second call. The real
plan's dry run (debug models, about a minute) runs in `.ci/run`; these tests drive the runner with quick steps."""

import json
import tarfile
import time

import pytest
import torch

from bench import campaign, cli
from bench.campaign import Step


def fake_plan(work, *, device, dry_run, timm_benchmark):
    write = f"import pathlib; p = pathlib.Path({str(work / 'records')!r}); p.mkdir(exist_ok=True); "
    return [
        Step("quick", ("-c", write + "(p / 'a.json').write_text('{}')"), 1, "a step that works"),
        Step("broken", ("-c", "raise SystemExit('no GPU here')"), 1, "a step that fails"),
        Step("absent", (), 0, "a step that cannot run", unavailable="no benchmark.py given"),
        Step("overrun", ("-c", "import time; time.sleep(60)"), 0.2, "a step far past its estimate"),
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
        state = campaign.run(campaign.Call(out, "cpu", 6, dry_run=True), log=lambda msg: None)
    return out, state


def test_a_campaign_runs_what_fits_records_why_the_rest_did_not_and_packs_one_archive(first_call):
    out, state = first_call
    status = {name: o.status for name, o in state.outcomes.items()}
    assert status == {"quick": "done", "broken": "failed", "absent": "unavailable", "overrun": "stopped",
                      "long": "deferred", "suite": "stopped"}
    assert "no GPU here" in state.outcomes["broken"].note and state.outcomes["suite"].rc == 3  # SIGTERM reached it
    assert "(its estimate was 0 s); --continue runs it again" in state.outcomes["overrun"].note  # not the budget
    with tarfile.open(out / "campaign.tar.gz") as tar:
        names = tar.getnames()
        saved = json.load(tar.extractfile("campaign.json"))
    assert {"records/a.json", "logs/broken.log", "campaign.json"} <= set(names)
    assert saved["outcomes"]["long"]["status"] == "deferred"


def test_continue_runs_only_what_the_first_call_did_not_finish(tmp_path, monkeypatch, first_call):
    monkeypatch.setattr(campaign, "plan", fake_plan)
    first = first_call[0] / "campaign.tar.gz"
    lines = []
    state = campaign.run(campaign.Call(tmp_path / "second", "cpu", 2, dry_run=True, previous=first),
                         log=lines.append)
    assert "[1/6] quick: done in an earlier call" in lines and state.outcomes["quick"].status == "done"
    with pytest.raises(cli.UsageError, match="device=cpu, dry_run=True"):
        campaign.run(campaign.Call(tmp_path / "third", "cuda", 6, dry_run=False, previous=first),
                     log=lambda msg: None)


@pytest.mark.parametrize("argv,message", [
    (["--device", "cpu"], "on a CPU run it with --dry-run"),
    (["--dry-run", "--device", "cpu", "--budget-s", "5"], "--budget-s must be at least 60"),
    (["--dry-run", "--device", "tpu"], "--device 'tpu'"),
    pytest.param(["--device", "cuda"], "torch sees no CUDA device here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["--dry-run", "--device", "cpu", "--timm-benchmark", "/nonexistent/benchmark.py"], "no such file"),
    (["--dry-run", "--device", "cpu", "--continue", "/nonexistent/c.tar.gz"], "no such archive"),
])
def test_bad_campaign_requests_are_usage_errors(tmp_path, capsys, argv, message):
    assert cli.main(["campaign", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [("hi\n", "not timm's benchmark.py"), ("def (:\n", "not a readable Python file"),
                                          ("\udcff", "not a readable Python file")])
def test_a_timm_benchmark_that_is_not_timms_is_refused_before_the_campaign_starts(tmp_path, capsys, text, message):
    """A hostile pass: a file holding "hi" ran the whole plan for 2.5 minutes, then failed at its step."""
    fake = tmp_path / "benchmark.py"
    fake.write_bytes(text.encode("utf-8", "surrogateescape"))
    argv = ["campaign", "--out", str(tmp_path / "out"), "--dry-run", "--device", "cpu", "--timm-benchmark", str(fake)]
    assert cli.main(argv) == 2 and message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_dry_run_plan_mirrors_the_gpu_plan_step_for_step(tmp_path):
    gpu = campaign.plan(tmp_path, device="cuda", dry_run=False, timm_benchmark=tmp_path / "benchmark.py")
    dry = campaign.plan(tmp_path, device="cpu", dry_run=True, timm_benchmark=tmp_path / "benchmark.py")
    for kind in ("paper_protocol_", "best_", "timm_benchmark_", "training_step", "table3_"):
        assert any(s.name.startswith(kind) for s in gpu) and any(s.name.startswith(kind) for s in dry), kind
    assert sum(s.name.startswith("paper_protocol_") for s in gpu) == 8 and gpu[-1].resumable

    def kinds(steps):  # the order of the kinds of step, e.g. best, timm, paper, ...
        names = [next(k for k in ("paper_protocol_", "best_", "timm_benchmark_", "training_step", "table3_")
                      if s.name.startswith(k)) for s in steps]
        return [k for i, k in enumerate(names) if i == 0 or names[i - 1] != k]

    assert kinds(gpu)[:2] == ["best_", "timm_benchmark_"] and kinds(dry) == kinds(gpu)[-len(kinds(dry)):]
    assert all("dry run of step" in s.what for s in dry[:-1]) and not any("dry run" in s.what for s in gpu)
    paper = [s.argv for s in gpu if s.name.startswith("paper_protocol_")]
    assert all(a[a.index("--max-batch-cap") + 1] == str(campaign.PAPER_BATCH_CAP) for a in paper)


# ---- issue #32: the campaign deletes only what it made, never overwrites an archive, reads only sound archives ----

def one_step_plan(work, *, device, dry_run, timm_benchmark):
    write = f"import pathlib; p = pathlib.Path({str(work / 'records')!r}); p.mkdir(exist_ok=True); "
    return [Step("quick", ("-c", write + "(p / 'a.json').write_text('{}')"), 1, "a step that works")]


def campaign_cli(out, *argv):
    return cli.main(["campaign", "--dry-run", "--device", "cpu", "--budget-s", "60", "--out", str(out), *argv])


@pytest.fixture
def one_step(monkeypatch):
    monkeypatch.setattr(campaign, "plan", one_step_plan)


def test_the_campaign_never_deletes_a_work_folder_it_did_not_make(tmp_path, one_step, capsys):
    """#32 row 1: `--out .` or `--out ~` must not lose a user's own `work/`."""
    thesis = tmp_path / "work" / "thesis" / "ch1.txt"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("notes")
    assert campaign_cli(tmp_path) == 0
    assert thesis.read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.tar.gz", "work"]  # its own folder is gone
    with tarfile.open(tmp_path / "campaign.tar.gz") as tar:
        assert "records/a.json" in tar.getnames() and not any(n.startswith("thesis") for n in tar.getnames())


def test_keep_work_keeps_the_campaigns_own_folder_and_names_it(tmp_path, one_step, capsys):
    assert campaign_cli(tmp_path, "--keep-work") == 0
    [work] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (work / "records" / "a.json").exists() and str(work) in capsys.readouterr().err


def test_a_second_campaign_into_one_out_does_not_replace_the_first_archive(tmp_path, one_step, capsys):
    """#32 row 2: exit 2 naming the file and both ways on, before any step runs."""
    assert campaign_cli(tmp_path) == 0
    archive = tmp_path / "campaign.tar.gz"
    first = archive.read_bytes()
    capsys.readouterr()
    assert campaign_cli(tmp_path) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and "--continue" in err and "--force" in err and "Traceback" not in err
    assert archive.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir()) == ["campaign.tar.gz"]
    assert campaign_cli(tmp_path, "--continue", str(archive)) == 0  # continuing it carries its content over
    assert campaign_cli(tmp_path, "--force") == 0
    assert archive.read_bytes() != first


def test_continue_does_not_replace_another_campaigns_archive_without_force(tmp_path, one_step, capsys):
    assert campaign_cli(tmp_path / "a") == 0 and campaign_cli(tmp_path / "b") == 0
    capsys.readouterr()
    assert campaign_cli(tmp_path / "b", "--continue", str(tmp_path / "a" / "campaign.tar.gz")) == 2
    assert "--force" in capsys.readouterr().err


def archive_of(path, members):
    """A tar.gz with the given (name, bytes | None for a folder | ('symlink', target)) members."""
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


GOOD_STATE = {"device": "cpu", "dry_run": True, "outcomes": {"quick": {"status": "failed", "wall_s": 1.0, "rc": 1,
                                                                          "note": ""}}}


def state_with(**changes):
    state = json.loads(json.dumps(GOOD_STATE))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = state
        for part in path:
            target = target[part]
        target[last] = value
    return json.dumps(state).encode()


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"not an archive at all"), "not a readable campaign archive"),
    (lambda p: p.write_bytes(b""), "not a readable campaign archive"),
    (lambda p: archive_of(p, [("records/a.json", b"{}")]), "no campaign.json"),
    (lambda p: archive_of(p, [("campaign.json", state_with()), ("../evil.txt", b"x")]), "../evil.txt"),
    (lambda p: archive_of(p, [("campaign.json", state_with()), ("/etc/evil", b"x")]), "/etc/evil"),
    (lambda p: archive_of(p, [("campaign.json", state_with()), ("records/link", ("symlink", "/etc/passwd"))]),
     "records/link"),
    (lambda p: archive_of(p, [("campaign.json", state_with()), ("thesis/ch1.txt", b"x")]), "thesis/ch1.txt"),
    (lambda p: archive_of(p, [("campaign.json", b"{not json")]), "campaign.json"),
    (lambda p: archive_of(p, [("campaign.json", b"[]")]), "campaign.json"),
    (lambda p: archive_of(p, [("campaign.json", state_with(outcomes=[]))]), "outcomes"),
    (lambda p: archive_of(p, [("campaign.json", state_with(outcomes__quick__status="great"))]), "status"),
    (lambda p: archive_of(p, [("campaign.json", state_with(outcomes__quick__wall_s="long"))]), "wall_s"),
    (lambda p: archive_of(p, [("campaign.json", state_with(outcomes__quick__rc=1.5))]), "rc"),
    (lambda p: archive_of(p, [("campaign.json", state_with(outcomes__quick__extra=1))]), "extra"),
    (lambda p: archive_of(p, [("campaign.json", state_with(dry_run="yes"))]), "dry_run"),
    (lambda p: archive_of(p, [("campaign.json", state_with(device=None))]), "device"),
    (lambda p: archive_of(p, [("campaign.json", None)]), "campaign.json"),
    (lambda p: archive_of(p, [("campaign.json", b"[" * 100_000 + b"]" * 100_000)]), "campaign.json"),
])
def test_continue_refuses_a_bad_archive_naming_it_and_leaves_nothing_behind(tmp_path, one_step, capsys, make, message):
    """#32 row 12: garbage, hostile or malformed archives are usage errors (exit 2), never a traceback."""
    bad = tmp_path / "bad.tar.gz"
    make(bad)
    out = tmp_path / "out"
    assert campaign_cli(out, "--continue", str(bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "evil.txt").exists()  # not even the --out folder it made


def test_a_truncated_archive_is_refused_and_leaves_no_state_for_the_next_run(tmp_path, one_step, capsys):
    """#32 row 12: a half-extracted folder once became the next run's saved state."""
    assert campaign_cli(tmp_path / "first") == 0
    whole = (tmp_path / "first" / "campaign.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    assert campaign_cli(out, "--continue", str(cut)) == 2
    assert "not a readable campaign archive" in capsys.readouterr().err and not out.exists()
    lines = []
    state = campaign.run(campaign.Call(out, "cpu", 60, dry_run=True), log=lines.append)
    assert not any("earlier call" in line for line in lines) and state.outcomes["quick"].status == "done"


def test_ctrl_c_packs_what_ran_and_says_where_the_records_are(tmp_path, monkeypatch, capsys):
    """#32 row 15: it once said "no record was written" while its folder held records."""
    def two_steps(work, **kwargs):
        return [*one_step_plan(work, **kwargs), Step("interrupted", ("-c", "pass"), 1, "Ctrl-C arrives here")]

    real = campaign._run_step

    def run_step(step, log_path, left_s):
        if step.name == "interrupted":
            time.sleep(0.3)
            raise KeyboardInterrupt
        return real(step, log_path, left_s)

    monkeypatch.setattr(campaign, "plan", two_steps)
    monkeypatch.setattr(campaign, "_run_step", run_step)
    assert campaign_cli(tmp_path) == 130
    err = capsys.readouterr().err
    assert "no record was written" not in err
    [work] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (work / "records" / "a.json").exists() and str(work) in err and str(tmp_path / "campaign.tar.gz") in err
    with tarfile.open(tmp_path / "campaign.tar.gz") as tar:
        saved = json.load(tar.extractfile("campaign.json"))
        assert "records/a.json" in tar.getnames()
    assert saved["outcomes"]["quick"]["status"] == "done" and saved["outcomes"]["interrupted"]["status"] == "stopped"
    assert saved["outcomes"]["interrupted"]["wall_s"] >= 0.3  # the time it ran; it said 0.0 (a hostile pass)


def test_a_full_disk_at_packing_says_where_what_ran_is_kept(tmp_path, one_step, monkeypatch, capsys):
    import errno

    def full(work, archive, *, replace):
        raise OSError(errno.ENOSPC, "No space left on device", str(archive))

    monkeypatch.setattr(campaign, "_pack", full)
    assert campaign_cli(tmp_path) == 1
    err = capsys.readouterr().err
    [work] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "No space left on device" in err and str(work) in err and (work / "records" / "a.json").exists()
