"""`results/constraints.txt`: the package versions that made the committed results, read from their records.

pip reads it as a constraints file (`pip install -c results/constraints.txt -e .`): a line per package the records
name, pinned where every record agrees and a range from the oldest to the newest version where they disagree, each
line saying how many records ran which version. A pure function of records, like the tables (`bench tables` writes
it): the same records give the same file. Python and CUDA are not pip packages; they are named in comments.
"""

from __future__ import annotations

from collections import Counter

from packaging.version import InvalidVersion, Version

from bench.record import Record

PACKAGES = ("torch", "torchvision", "timm", "fvcore")  # the packages `collect_env` records (bench/record.py)
NOT_PIP = (("python", "Python"), ("cuda", "CUDA"))  # recorded too, but pip installs neither


def constraints(records: list[Record], source: str, where: str = "results/constraints.txt") -> str:
    """The constraints file for `records`, read from `source` (named in its header: a path relative to the file),
    to be written at `where` (a path from the repository root, or an absolute one outside it)."""
    lines = [f"# The package versions that made the {len(records)} records under {source}/ (from this file's folder),",
             "# written from them by `bench tables`; do not edit. One line per package: pinned where every",
             "# record agrees, a range from the oldest to the newest where they disagree, the records of each version",
             "# counted in the comment. From the repository root:",
             f"#   pip install -c {where} -e .",
             "# A local label such as +cu130 names the wheel's CUDA build: pip compares the public version, so the CPU",
             "# or another CUDA build of the same version satisfies a line as well."]
    for key, name in NOT_PIP:
        counts = _counts(records, key)
        if counts:
            lines.append(f"# {name} (not installed by pip): {_tally(counts)}")
    for package in PACKAGES:
        counts = _counts(records, package)
        if counts:
            lines.append(f"{_requirement(package, list(counts))}  # {_tally(counts)}")
    return "\n".join(lines) + "\n"


def _counts(records: list[Record], key: str) -> Counter[str]:
    return Counter(str(r.env[key]) for r in records if r.env.get(key))


def _tally(counts: Counter[str]) -> str:
    """'2.14.1+cu130 (110 records), 2.15.0+cu132 (88 records)', oldest version first."""
    return ", ".join(f"{v} ({n} record{'s' if n != 1 else ''})" for v, n in sorted(counts.items(), key=_order))


def _order(item: tuple[str, int]) -> tuple:
    version = _public(item[0])
    return (version is None, version or Version("0"), item[0])


def _public(version: str) -> Version | None:
    """The version without its local label (2.14.1+cu130 -> 2.14.1); None where pip could not read it."""
    try:
        return Version(Version(version).public)
    except InvalidVersion:
        return None


def _requirement(package: str, versions: list[str]) -> str:
    """`package==v`, or `package>=oldest,<=newest` where the records disagree, on the public versions."""
    public = sorted({v for v in map(_public, versions) if v is not None})
    if not public:
        return f"# {package}: no version pip can read"
    if len(public) == 1:
        return f"{package}=={public[0]}"
    return f"{package}>={public[0]},<={public[-1]}"
