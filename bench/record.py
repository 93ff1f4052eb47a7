"""One typed result record per run: JSON, schema-versioned, written atomically, never overwritten."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from bench import schema
from bench.jsontypes import type_problem
from bench.protocols import GPU_ONLY_PRECISIONS
from bench.store import write_text_atomic

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
PATH_FIELDS = ("data", "teacher_checkpoint", "finetune")  # a training config's paths (config.py: absolute_paths)


def portable_paths(config: dict) -> dict:
    """`config` with each path inside the repository relative to its root: a run's config keeps its paths absolute
    (reproduce/config.py: absolute_paths) and an older one's kept them as typed, from the root; read so, seeds of one
    configuration pool whichever clone or version trained them (a review: one new seed hid five older ones)."""

    return {k: from_repo_root(v) if k in PATH_FIELDS and isinstance(v, str) and v else v for k, v in config.items()}


def from_repo_root(path: str | Path) -> str:
    """An absolute `path` inside the repository as a path from its root; any other path as it is."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_absolute() and path.is_relative_to(REPO_ROOT) else str(path)


@dataclass(frozen=True)
class Record:
    """What one run measured, with how and where. The sections are typed for the record's kind
    (bench/schema.py: `record.metrics.params`); given as plain dicts, they are wrapped on construction."""

    variant: str
    model: str
    settings: Any  # schema.BenchSettings | TrainSettings | DisagreeSettings | ConfigSettings
    metrics: Any  # schema.BenchMetrics | TrainMetrics | DisagreeMetrics | NoMetrics
    env: schema.Env
    kind: str = "bench"
    schema_version: int = SCHEMA_VERSION
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in schema.KINDS:
            raise ValueError(f"unknown record kind {self.kind!r}; known: {', '.join(schema.KINDS)}")
        for section in ("settings", "metrics", "env"):
            cls = schema.section_class(self.kind, section)
            value = getattr(self, section)
            if not isinstance(value, cls):
                object.__setattr__(self, section, cls(value))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the sections exactly as given (no key added for what was not measured)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: (dict(v) if isinstance(v, schema.Section) else v) for k, v in data.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Raises ValueError saying what is wrong: not JSON, not a record, a schema this version does not read."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        except RecursionError:  # a hostile file of 100 000 nested brackets
            raise ValueError("not a record: JSON nested too deeply") from None
        except ValueError as exc:  # Python's own advice ("use sys.set_int_max_str_digits()") is for programmers
            if "integer string conversion" not in str(exc):
                raise
            raise ValueError("not a record: it holds an integer of more than 4,300 digits, which no run "
                             "writes") from None
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        if isinstance(data, dict) and "schema_version" not in data and (what := other_file(data)):
            raise OtherFile(f"{what}, not a run's record")
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ValueError("not a deit-bench record (a JSON object with schema_version, kind, variant, settings, "
                             "metrics, env)")
        if data["schema_version"] != SCHEMA_VERSION:
            raise ValueError(f"record schema {data['schema_version']!r}; this version reads schema {SCHEMA_VERSION}")
        missing = [k for k in required if k not in data]
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if missing or unknown:
            raise ValueError("not a complete record: " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"unknown fields {', '.join(unknown)}" if unknown else "") if part))
        if not all(isinstance(data[k], dict) for k in ("settings", "metrics", "env")):
            raise ValueError("not a complete record: settings, metrics and env must be JSON objects")
        kind = data.get("kind", "bench")
        if not isinstance(kind, str) or kind not in schema.KINDS:
            raise ValueError(f"unknown record kind {kind!r}; this version reads {', '.join(schema.KINDS)}")
        # types, not only keys: a reader of `"params": "five million"` must not be the one to find out
        problems = [f"{k}: {p}" for k, t in (("variant", str), ("model", str), ("notes", list[str]))
                    if k in data for p in [type_problem(data[k], t)] if p]
        problems += [f"{section}.{p}" for section in ("settings", "metrics", "env")
                     for p in schema.section_class(kind, section)(data[section]).problems()]
        if problems:
            raise ValueError("; ".join(problems))
        contradictions = _contradictions(data, kind)
        if contradictions:
            raise ValueError("; ".join(contradictions))
        return cls(**data)

    @property
    def accuracy_precision(self) -> str | None:
        """The precision a bench record's accuracy was measured in. Older records have no
        `settings.accuracy_precision`: their accuracy ran in `settings.precision`, which `auto` chose by the CPU."""
        return self.settings.get("accuracy_precision") or self.settings.get("precision")

    @property
    def evaluation(self) -> dict[str, Any]:
        """What a bench record's accuracy was measured on: how many images, their layout and label space, ReaL labels
        or not, and the weights (the checkpoint's sha256). Two accuracies are comparable only where these agree (a
        hostile pass gated 30 CIFAR-10 images of one checkpoint against 10 ImageNet images of another)."""
        ev = self.settings.get("eval") or {}
        sha = next((n.split()[-1] for n in self.notes if n.startswith("checkpoint sha256 ")), None)
        return {"images": self.metrics.get("images"), "dataset": ev.get("dataset"),
                "label_space": ev.get("label_space"), "real_labels": bool(ev.get("real_labels")), "weights": sha}

    @property
    def created(self) -> dt.datetime:
        """When the run was recorded, as a time (an offset other than UTC's compares by the instant, not as text).
        A record read from a file has one with its zone (schema: env.created); one built in memory without a zone is
        read as UTC."""
        stamp = dt.datetime.fromisoformat(self.env.created)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def write_record(record: Record, results_dir: Path) -> Path:
    """Write `record` to a new file under `results_dir` atomically and return its path.

    The JSON goes to a temporary file in the same folder, is flushed to disk, then hard-linked to its
    final name (which fails rather than overwrite) and the temporary name removed: an interrupted run
    leaves no partial record and an existing record is never replaced.
    """
    stamp = record.env.created.replace(":", "").replace("-", "")[:15]
    name = f"{stamp}-{record.variant}-{record.settings.device.split(':')[0]}-{uuid.uuid4().hex[:8]}.json"
    return write_text_atomic(results_dir / name, record.to_json(), replace=False)


class RecordError(ValueError):
    """A file that is not a readable record, named with the reason; `other`: one of the project's other JSON files
    (`OTHER_FILES`), which a folder of records may hold beside them."""

    def __init__(self, message: str, *, other: bool = False) -> None:
        super().__init__(message)
        self.other = other


class OtherFile(ValueError):
    """JSON that the project writes, but not a run's record."""


# The project's other JSON files, by the keys that tell each apart. A folder of records may hold them:
# docs/regression-gate.md keeps the A/B rounds beside the size records it gates (`--ab-record $now/ab.json`), and
# every later `bench check --current $now` was then refused (a hostile pass).
AB_ROUNDS_FILE = "bench check --ab-record's A/B rounds"
OTHER_FILES = {  # every key `bench/ab.py: write` has written since the gate began
    AB_ROUNDS_FILE: {"reference", "current", "rounds", "calls", "processes", "workloads", "seconds", "machine",
                     "measured_at"},
    "bench campaign's state": {"device", "dry_run", "outcomes"},
}


def other_file(data: object) -> str | None:
    """Which of the project's other JSON files `data` (parsed) is, or None."""
    keys = set(data) if isinstance(data, dict) else set()
    return next((what for what, needed in OTHER_FILES.items() if needed <= keys), None)


def read_record(path: Path, check: Callable[[Record], None] | None = None) -> Record:
    """The record in `path`, and `check(record)` passed. Raises RecordError naming the file and what is wrong."""
    try:
        record = Record.from_json(read_regular_text(path))
        if check is not None:
            check(record)
        return record
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise RecordError(f"{path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
                          other=isinstance(exc, OtherFile)) from None


MAX_JSON_BYTES = 64 * 2**20  # a record is a few KiB, an A/B record of 100 rounds well under a megabyte


def read_regular_text(path: Path) -> str:
    """The text of a regular file (UTF-8). Opened without blocking and checked before reading: a FIFO named x.json
    among records once hung `bench tables`, and a 4 GB one took it 40 s and 8.5 GB of memory to skip (a hostile
    pass). Raises ValueError for anything but a regular file of at most `MAX_JSON_BYTES`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file")
    if (size := os.fstat(fd).st_size) > MAX_JSON_BYTES:
        os.close(fd)
        raise ValueError(f"{size:,} bytes, more than any JSON file of this project holds (at most {MAX_JSON_BYTES:,})")
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("utf-8")


def load_records(path: Path, skip_bad: Callable[[RecordError], None] | None = None,
                 check: Callable[[Record], None] | None = None) -> list[Record]:
    """Every record in a folder (recursively) or the one record in a file, oldest first by the time each run
    was recorded (not by file name, which would make the "latest" record depend on the folder it lies in), so `[-1]` is
    the newest. A file that is not a record, of the wrong types, not a regular file, or failing the reader's own
    `check` (a ValueError saying why) raises RecordError naming it, or, given `skip_bad`, is passed to it and
    left out."""
    return [record for _, record in load_record_files(path, skip_bad, check)]


def _contradictions(data: dict[str, Any], kind: str) -> list[str]:
    """Fields of one record that contradict each other: `variant: deit_ti` with DeiT-B's timm model (another
    registered variant's) put DeiT-B's size and speed in the DeiT-Ti row; `settings.threads: 1` under a column of 2 threads; a fingerprint whose fields were
    edited under its old id; an fp16 record of a CPU, 3 iterations beside 8 timed batches, env.torch other than the
    fingerprint's (hostile passes; every committed record agrees)."""
    from bench.machine import Fingerprint
    from bench.registry import VARIANTS

    out = []
    variant = VARIANTS.get(data["variant"]) if kind == "bench" else None
    others = {v.model: name for name, v in VARIANTS.items() if variant is not None and v.model != variant.model}
    if variant is not None and data["model"] in others:  # a model no variant has now (a renamed timm name) is history
        out.append(f"model: {data['model']!r} is {others[data['model']]}'s timm model, not {data['variant']}'s "
                   f"({variant.model!r})")
    threads, env_threads = data["settings"].get("threads"), data["env"].get("num_threads")
    if kind == "bench" and None not in (threads, env_threads) and threads != env_threads:
        out.append(f"settings.threads: {threads} is not env.num_threads, {env_threads}")
    settings, metrics = data["settings"], data["metrics"]
    if kind == "bench" and settings.get("device") == "cpu" and settings.get("precision") in GPU_ONLY_PRECISIONS:
        out.append(f"settings.precision: {settings['precision']!r} runs only on a CUDA GPU, and settings.device is cpu")
    samples, iters = metrics.get("batch_ms_samples"), settings.get("iters")
    if kind == "bench" and isinstance(samples, list) and isinstance(iters, int) and len(samples) != iters:
        out.append(f"metrics.batch_ms_samples: {len(samples)} timed batches, where settings.iters says {iters}")
    fingerprint = data["env"].get("fingerprint")
    torch, fp_torch = data["env"].get("torch"), fingerprint.get("torch") if isinstance(fingerprint, dict) else None
    if isinstance(torch, str) and isinstance(fp_torch, str) and torch.split("+")[0] != fp_torch.split("+")[0]:
        out.append(f"env.torch: {torch!r} is not the fingerprint's torch, {fp_torch!r}")
    fields = {f.name for f in dataclasses.fields(Fingerprint)} | {"id"}
    # only a fingerprint of today's fields: one written before a field was added (or after, by a newer version) has
    # another id by construction, and stays readable
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("id"), str) and set(fingerprint) == fields:
        try:
            fields_id = Fingerprint.from_dict(fingerprint).id()
        except (TypeError, ValueError):  # not a whole fingerprint: the readers that need one say so
            fields_id = None
        if fields_id is not None and fields_id != fingerprint["id"]:
            out.append(f"env.fingerprint.id: {fingerprint['id']!r} is not the id of its fields, {fields_id!r} (a field "
                       "was changed after the run)")
    return out


def load_record_files(path: Path, skip_bad: Callable[[RecordError], None] | None = None,
                      check: Callable[[Record], None] | None = None) -> list[tuple[Path, Record]]:
    """`load_records` with the file each record was read from (the results page and the notebook frame name it). In
    a folder, the project's other JSON files (`OTHER_FILES`) are passed over; given as the file, they are refused."""
    # a folder named x.json is a folder: its records are read, and it is no "unreadable record file" (a hostile pass)
    folder = path.is_dir()
    files = sorted(f for f in path.rglob("*.json") if not f.is_dir()) if folder else [path]
    found = []
    for f in files:
        if f.name.startswith(".tmp-"):
            continue
        try:
            found.append((f, read_record(f, check)))
        except RecordError as exc:
            if exc.other and folder:
                continue
            if skip_bad is None:
                raise
            skip_bad(exc)
    return sorted(found, key=lambda pair: pair[1].created)  # stable: one time keeps the file-name order


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# Variables that point git at another repository than the one `-C` names: inside another repository's git hook
# (which sets GIT_DIR) a record named that repository's commit as the code that ran (a hostile pass).
GIT_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                            "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX")


def git_environment() -> dict[str, str]:
    """This process's environment without `GIT_REPOSITORY_VARIABLES`: git then reads the checkout `-C` names."""
    return {k: v for k, v in os.environ.items() if k not in GIT_REPOSITORY_VARIABLES}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10,
                             env=git_environment())
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _commit() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it. A copy without git's history (a lent GPU gets
    the working tree, not `.git`) names them in DEIT_BENCH_GIT_SHA and DEIT_BENCH_GIT_DIRTY (0 or 1), as `.ci/device`
    does; git, where it answers, wins."""
    sha = _git("rev-parse", "HEAD")
    if sha is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return sha, bool(status) if status is not None else None
    dirty = os.environ.get("DEIT_BENCH_GIT_DIRTY")
    return os.environ.get("DEIT_BENCH_GIT_SHA") or None, {"0": False, "1": True}.get(dirty or "")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_env(device_name: str, extra: dict[str, Any] | None = None, fingerprint: Any = None) -> dict[str, Any]:
    """Provenance of a run: code version, library versions, hardware, time, command line, and the machine
    fingerprint (bench/machine.py) that decides which speed baselines apply; detected for the CPU if not given."""
    import torch

    from bench import machine

    fingerprint = fingerprint or machine.detect("cpu")
    sha, dirty = _commit()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "fvcore": _version("fvcore"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_name": device_name,
        "cpu": cpu_model(),
        "num_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([_program(), *sys.argv[1:]]),
        "fingerprint": fingerprint.to_dict(),
        **(extra or {}),
    }


def _program() -> str:
    """The command's name as a user types it again: `bench`/`reproduce` for `python -m bench` (whose argv[0] is the
    package's __main__.py), else argv[0]'s file name."""
    path = Path(sys.argv[0])
    return path.parent.name if path.name == "__main__.py" else path.name
