"""The measured GEMM peak (bench/peak.py): which precisions a machine gets one for, the cache per fingerprint, and
that a peak measured on a busy machine is neither cached nor used."""

import dataclasses
import json

import pytest

from bench import machine, peak

CPU = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "stepping": "1", "model name": "AMD EPYC"}


def fingerprint(flags: str, **gpu):
    fp = machine.detect("cpu", threads=1, info=CPU | {"flags": flags})
    return dataclasses.replace(fp, **gpu)


def test_only_native_precisions_get_a_peak():
    assert peak.columns(fingerprint("avx2 fma")) == ("fp32",)  # bf16 emulated: no peak to divide by
    assert peak.columns(fingerprint("avx2 avx512f avx512_bf16")) == ("fp32", "bf16")
    assert peak.columns(fingerprint("avx2", device="cuda", gpu_capability="9.0")) == ("fp32", "tf32", "bf16", "fp16")
    assert peak.columns(fingerprint("avx2", device="cuda", gpu_capability="7.0")) == ("fp32", "fp16")  # the V100


def test_a_real_measurement_keeps_the_best_and_the_median_rate():
    result = peak.measure("fp32", "cpu", 1)
    assert result.products >= 5 and result.size == peak.SIZES["cpu"]
    assert 0 < result.median_tflops <= result.tflops < 10  # one CPU thread is far below 10 TFLOP/s


def test_the_peak_is_measured_once_per_fingerprint_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake(column, device, threads, contended=False):
        calls.append(column)
        return peak.Peak(column, 1.0, 0.9, 64, 5, threads, contended)

    monkeypatch.setattr(peak, "measure", fake)
    fp = fingerprint("avx2 avx512f avx512_bf16")
    first = peak.measured_peaks(fp, "cpu", folder=tmp_path)
    assert calls == ["fp32", "bf16"] and first["bf16"].tflops == 1.0
    assert peak.measured_peaks(fp, "cpu", folder=tmp_path) == first and len(calls) == 2  # from the cache
    saved = json.loads((tmp_path / f"{fp.id()}.json").read_text())
    assert saved["fingerprint"]["id"] == fp.id()
    other = dataclasses.replace(fp, threads=2)  # another thread count is another machine for speed
    peak.measured_peaks(other, "cpu", folder=tmp_path)
    assert len(calls) == 4
    (tmp_path / f"{fp.id()}.json").write_text("{not json")  # a torn cache file is measured again, replaced
    assert peak.measured_peaks(fp, "cpu", folder=tmp_path) == first and len(calls) == 6


def test_a_peak_measured_on_a_busy_machine_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(peak, "measure", lambda c, d, t: peak.Peak(c, 0.1, 0.1, 64, 5, t, contended=True))
    fp = fingerprint("avx2")
    messages = []
    assert peak.measured_peaks(fp, "cpu", folder=tmp_path, log=messages.append)["fp32"].contended
    assert not list(tmp_path.iterdir()) and "busy" in messages[-1]


@pytest.mark.parametrize("gmacs, img_per_s, tflops, expected", [(17.6, 10.0, 0.352, 1.0), (1.3, 100.0, 1.0, 0.26)])
def test_fraction_counts_two_flops_per_mac(gmacs, img_per_s, tflops, expected):
    assert peak.fraction(gmacs, img_per_s, peak.Peak("fp32", tflops, tflops, 64, 5, 1)) == pytest.approx(expected)


@pytest.mark.parametrize("contended", [False, True])
def test_every_speed_record_carries_its_achieved_flops_and_its_fraction_of_the_measured_peak(contended, tmp_path,
                                                                                              monkeypatch):
    from bench.registry import VARIANTS
    from bench.run import measure, resolve_settings

    monkeypatch.setenv("DEIT_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "measure", lambda c, d, t: peak.Peak(c, 0.5, 0.4, 64, 5, t, contended))
    variant = VARIANTS["debug"]
    record = measure(variant, resolve_settings(variant, device="cpu", metrics="size,speed", precision="fp32",
                                               iters=2, warmup=1), log=lambda m: None)
    m = record.metrics
    assert m.achieved_tflops == pytest.approx(2 * m.gmacs * m.infer_img_per_s / 1e3)
    assert m.peak_column == "fp32"
    if contended:  # a peak measured busy would inflate the fraction: none is given
        assert m.peak_tflops_measured is None and m.mfu_measured is None
    else:
        assert m.peak_tflops_measured == 0.5 and m.mfu_measured == pytest.approx(m.achieved_tflops / 0.5)


def test_a_cached_peak_the_run_beat_is_measured_again_and_an_mfu_over_100_percent_is_never_given(tmp_path,
                                                                                                  monkeypatch):
    """A hostile pass: a cached bf16 peak edited to 0.000429 TFLOP/s gave "MFU 116.3 %", printed as a plain number."""
    rates = iter([1e-4, 2.0, 2.0])  # cached; measured again; (the test's own draw)
    monkeypatch.setattr(peak, "_MEASURED_AGAIN", set())

    def fake(column, device, threads):
        rate = next(rates)
        return peak.Peak(column, rate, min(rate, 0.1), 64, 5, threads)

    monkeypatch.setattr(peak, "measure", fake)
    fp = fingerprint("avx2")  # one column, fp32
    assert peak.measured_peaks(fp, "cpu", folder=tmp_path)["fp32"].tflops == 1e-4  # the stale cache
    messages = []
    measured = peak.usable(fp, "cpu", "fp32", 0.5, folder=tmp_path, log=messages.append)
    assert measured.tflops == 2.0 and "above the cached fp32 GEMM peak" in messages[0]  # measured again, replaced
    assert peak.usable(fp, "cpu", "fp32", 0.5, folder=tmp_path).tflops == 2.0 and next(rates) == 2.0  # from the cache
    assert peak.usable(fp, "cpu", "fp32", 3.0, folder=tmp_path, log=messages.append) is None  # beat a fresh peak too
    assert messages[-1] == "no MFU: 3 TFLOP/s achieved is above the fp32 GEMM peak measured in this run"  # once only
    peak._MEASURED_AGAIN.clear()  # a new process: the cached 2.0 is beaten, and so is the 1.0 measured again
    monkeypatch.setattr(peak, "measure", lambda column, device, threads: peak.Peak(column, 1.0, 0.9, 64, 5, threads))
    assert peak.usable(fp, "cpu", "fp32", 3.0, folder=tmp_path, log=messages.append) is None
    assert messages[-1] == "no MFU: 3 TFLOP/s achieved is above the fp32 GEMM peak measured now, 1"


@pytest.mark.parametrize("field, value", [("tflops", "0.5"), ("tflops", None), ("tflops", -1.0), ("contended", "no"),
                                          ("median_tflops", 5.0), ("products", 2.5), ("precision", "bf16"),
                                          ("tflops", 4379.0)])  # no CPU of a few threads reaches it (a hostile pass)
def test_a_cache_file_with_a_wrong_field_is_measured_again(tmp_path, monkeypatch, field, value):
    """A hostile pass: `tflops: "0.5"` (or null) in the cache crashed `bench run` with a TypeError after its timing,
    and the measurement was lost. Such a file is unreadable, so it is measured again and replaced."""
    calls = []
    monkeypatch.setattr(peak, "measure", lambda c, d, t: calls.append(c) or peak.Peak(c, 1.0, 0.9, 64, 5, t))
    fp = fingerprint("avx2")
    peak.measured_peaks(fp, "cpu", folder=tmp_path)
    path = tmp_path / f"{fp.id()}.json"
    data = json.loads(path.read_text())
    data["peaks"]["fp32"][field] = value
    path.write_text(json.dumps(data))
    assert peak.measured_peaks(fp, "cpu", folder=tmp_path)["fp32"].tflops == 1.0 and len(calls) == 2
    assert json.loads(path.read_text())["peaks"]["fp32"][field] != value  # replaced by the new measurement


def test_without_a_home_the_peak_is_measured_once_per_process_and_nothing_crashes(tmp_path, monkeypatch):
    """A hostile pass: HOME unset and a user id without a passwd entry (a container's --user N): Path.home() raised
    after the timing, and every `bench run` lost its record."""
    from pathlib import Path

    from bench import cifar10, store
    from bench.errors import DataError

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("DEIT_BENCH_CACHE", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    monkeypatch.setattr(peak, "_UNCACHED", {})
    assert store.cache_root() is None and peak.cache_folder() is None
    calls, messages = [], []
    monkeypatch.setattr(peak, "measure", lambda c, d, t: calls.append(c) or peak.Peak(c, 1.0, 0.9, 64, 5, t))
    fp = fingerprint("avx2")
    assert peak.measured_peaks(fp, "cpu", log=messages.append)["fp32"].tflops == 1.0
    assert peak.measured_peaks(fp, "cpu")["fp32"].tflops == 1.0 and calls == ["fp32"]  # once in this process
    assert "set DEIT_BENCH_CACHE=FOLDER to keep it" in messages[0]
    with pytest.raises(DataError, match="set DEIT_BENCH_CACHE=FOLDER, or pass --data"):
        cifar10.cifar10_tree()
    monkeypatch.setenv("DEIT_BENCH_CACHE", str(tmp_path))  # the variable alone is enough, home or not
    assert store.cache_root() == tmp_path


def test_cifar10_into_a_cache_that_cannot_take_it_is_a_data_error_naming_it(tmp_path, monkeypatch):
    """A hostile pass: a read-only home gave a PermissionError traceback, a full disk an OSError one mid-unpack."""
    from bench import cifar10
    from bench.errors import DataError

    if not cifar10.SHARED_CIFAR.exists():
        pytest.skip("needs ../shared/datasets/cifar10-jpeg.tar.gz")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DEIT_BENCH_CACHE", str(tmp_path / "file" / "cache"))  # a folder that cannot be made
    with pytest.raises(DataError, match="cannot unpack CIFAR-10 into .*file/cache: .*set DEIT_BENCH_CACHE=FOLDER"):
        cifar10.cifar10_tree()

    def full(tar, into, cache):
        (into / "train").mkdir()
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("DEIT_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar10, "_extract_with_progress", full)
    with pytest.raises(DataError, match="failed: No space left on device; nothing of it was kept"):
        cifar10.cifar10_tree()
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unpack_killed_outright_is_swept_by_the_next(tmp_path, monkeypatch):
    """A hostile pass: a SIGKILL mid-unpack left a 0.25 GB `.tmp-cifar-*` folder in the cache for good. The next
    unpack removes this host's leftovers whose process is gone, and keeps a live one's and another host's."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from bench import cifar10

    if not cifar10.SHARED_CIFAR.exists() or not Path("/proc/self/stat").exists():
        pytest.skip("needs ../shared/datasets/cifar10-jpeg.tar.gz and /proc")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not yet reaped: signal 0 still reaches it
    while not Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].startswith(" Z"):
        time.sleep(0.01)
    host = cifar10._this_host()
    dead = tmp_path / f".tmp-cifar-{host}-{int(gone.stdout)}-abc_1234"
    killed = tmp_path / f".tmp-cifar-{host}-{zombie.pid}-jkl_3456"
    live = tmp_path / f".tmp-cifar-{host}-{os.getppid()}-def_5678"
    other_host = tmp_path / f".tmp-cifar-{socket.gethostname()}.1-{int(gone.stdout)}-ghi_9012"  # another pid space
    for folder in (dead, killed, live, other_host):
        (folder / "train").mkdir(parents=True)
    seen = []

    def unpack(tar, into, cache):
        seen.append(sorted(p.name for p in cache.iterdir() if p != into))
        for split in ("train", "test"):
            (into / split).mkdir()

    monkeypatch.setenv("DEIT_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cifar10, "_extract_with_progress", unpack)
    assert cifar10.cifar10_tree() == tmp_path / "cifar10-jpeg"
    zombie.wait()
    assert seen == [sorted([live.name, other_host.name])]  # the dead ones were gone before unpacking began
