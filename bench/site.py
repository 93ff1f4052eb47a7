"""What `bench tables` writes (`regenerate`), and `results/index.html`: the tables, the figures and the machines behind
them on one page, as asv publishes its site.

Written by `bench tables` beside its tables folder, from what that run built (the tables, the figures it drew, the
records it read) and nothing else: no clock, no network, so the same records give the same bytes. The page works
offline and alone (no script, no external stylesheet or font); figures are the SVG files beside it, linked by
relative paths rather than copied in, so each figure stays one file. Tested in a real browser by
tests/bench/test_site.py (headless Chromium).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path

from bench import constraints, machine
from bench import tables as tables_mod
from bench.errors import StorageError
from bench.record import Record, from_repo_root, load_record_files
from bench.store import STAGING_PREFIX, hold_folder, interrupts_deferred, write_text_atomic
from bench.tables import Table
from bench.trained import copied_runs, repeated_seeds

STYLE = """
:root { --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --paper: #f3f0e6; --ours: #eaf2fb; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 84rem; padding: 1rem 1.5rem 4rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; }
.lead, .muted, figcaption, .notes { color: var(--muted); }
nav ul { columns: 3 18rem; padding-left: 1.2rem; font-size: .9rem; }
.scroll { overflow-x: auto; border: 1px solid var(--line); }
table { border-collapse: collapse; font-size: .82rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .25rem .45rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; position: sticky; top: 0; }
th.paper, td.paper { background: var(--paper); } th.ours, td.ours { background: var(--ours); }
.legend span { padding: 0 .4rem; border: 1px solid var(--line); }
.notes { font-size: .85rem; padding-left: 1.2rem; }
details { margin: .4rem 0; font-size: .85rem; } summary { cursor: pointer; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; } nav, .files { display: none; }
  .scroll { overflow: visible; border: none; } table { font-size: 7pt; } thead th { position: static; }
  section, figure { break-inside: avoid; } a { color: inherit; text-decoration: none; }
}
"""


def page(tables: list[Table], figures: list[Path], drawn: set[Path], records: list[tuple[Path, Record]],
         where: Path, tables_dir: Path, pins: str, install: str = "results/constraints.txt") -> str:
    """The page to be written at `where`: each table (caption, columns, footer, the records behind it, its files
    in `tables_dir`), each figure (one per name among `figures`; those not in `drawn` marked as kept), the
    machines of `records` (path, record pairs) and `pins`, the constraints file's text, installed from `install`.
    Links are relative to `where`'s folder."""
    folder = where.parent
    paths = {id(r): f for f, r in records}
    oldest, newest = (min(r.created for _, r in records), max(r.created for _, r in records)) if records else (0, 0)
    figure_stems = sorted({f.with_suffix("") for f in figures})
    contents = [(t.name, t.title) for t in tables] + [("figures", "Figures"), ("machines", "Machines"),
                                                       ("environment", "Rebuild the environment")]
    parts = [
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>DeiT benchmark: results</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<header><h1>DeiT benchmark: results</h1>",
        f'<p class="lead">The paper\'s tables regenerated from {len(records)} result records '
        f"({_date(oldest)} to {_date(newest)}), the paper's values beside ours, the figures, and the machines the "
        "numbers come from. Written by <code>bench tables</code> from the records alone; a cell without a record "
        "says <em>not run</em>.</p>",
        '<p class="legend">Columns: <span class="paper">the paper\'s</span> <span class="ours">ours</span></p>',
        "</header>",
        '<nav><h2 id="contents">Contents</h2><ul>',
        *(f'<li><a href="#{escape(anchor)}">{escape(title)}</a></li>' for anchor, title in contents),
        "</ul></nav>",
        *(_table(t, paths, folder, tables_dir) for t in tables),
        '<section id="figures"><h2>Figures</h2>',
        *(_figure(stem, set(figures), folder, kept=not {stem.with_suffix(".svg"), stem.with_suffix(".png")} & drawn)
          for stem in figure_stems),
        *(["<p>No figures were drawn from these records.</p>"] if not figure_stems else []),
        "</section>",
        _machines([r for _, r in records]),
        '<section id="environment"><h2>Rebuild the environment</h2>',
        "<p>The package versions that made these records (<code>constraints.txt</code> beside this page); from the "
        "repository root:</p>", f"<pre>pip install -c {escape(install)} -e .</pre>",
        f"<pre>{escape(pins)}</pre></section>",
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class Regenerated:
    records: int  # records read
    written: list[Path]
    skipped: int  # unreadable record files left out (each passed to `warn`)
    interrupted: bool = False  # a Ctrl-C came while the files were put in place, and waited until all were


def regenerate(records_dir: Path, out: Path, figures_dir: Path, *, draw: bool, warn) -> Regenerated:
    """All that `bench tables` writes, from the records under `records_dir` and nothing else: the tables into `out`,
    the figures into `figures_dir` (unless not `draw`), index.html and constraints.txt into `out`'s parent.

    Every file or none on Ctrl-C, an error or a full disk: every file is written into a staging folder beside where
    it goes, and only once all are written are they renamed into place, which needs no room on the disk, with
    Ctrl-C held back for the milliseconds that takes (an interrupted run used to leave 51 of 73 files new beside an
    old page; a full disk while the tables were written, new tables beside an old page). A second `bench tables`
    into the same `out`, figures folder or page folder is refused (FolderInUse) while this one holds them.
    ValueError, before anything is written, when the parent holds a page of its own or no record is readable; one
    unreadable record file is passed to `warn` (a line to print) and left out rather than blocking every table; so
    are a seed trained twice and records of one cell made at one instant that disagree."""
    if out.resolve() == out.resolve().parent:
        raise ValueError(f"--out {out}: the page and constraints.txt go into the folder above --out, and {out} has "
                         "none; give a folder below it")
    with ExitStack() as held:
        for folder in {f.resolve(): f for f in (out, figures_dir, out.parent)}.values():  # the page's too: two runs
            held.enter_context(hold_folder(folder))  # into sibling --outs write the same index.html
        check_replaceable(out.parent, page=draw)
        skipped = []
        found = load_record_files(records_dir, skip_bad=skipped.append, check=tables_mod.check_record)
        for exc in skipped:
            warn(f"skipped {exc}")
        for note in [*repeated_seeds(found), *copied_runs(found), *tables_mod.same_instant_conflicts(found)]:
            warn(note)
        if not found:  # every table would be 'not run', replacing what `out` holds
            raise ValueError(f"no readable records (*.json) in {records_dir}"
                             + (f" ({len(skipped)} skipped above)" if skipped else "") + "; nothing was written")
        records = [r for _, r in found]
        built = tables_mod.build_all(records)
        with _staging(figures_dir) as figures_stage, _staging(out) as tables_stage, _staging(out.parent) as page_stage:
            stages = {page_stage: out.parent, tables_stage: out, figures_stage: figures_dir}
            try:
                moves = _stage(built, found, draw, stages, records_dir)
            except StorageError as exc:  # named where the file was to go, not by its staging folder
                raise StorageError(_unstaged(str(exc), stages) + "; nothing was replaced") from None
            late = False
            try:
                with interrupts_deferred():
                    written = [_move(path, folder) for path, folder in moves]
            except KeyboardInterrupt:  # held back until every file was in place: it stopped nothing
                late = True
    return Regenerated(len(records), written, len(skipped), late)


def _stage(built: list[Table], found: list[tuple[Path, Record]], draw: bool, stages: dict[Path, Path],
           records_dir: Path) -> list[tuple[Path, Path]]:
    """Write every file into its staging folder (`stages`: staging folder -> where its files go, the page's, the
    tables' and the figures' in that order; each inside its destination, so that a rename puts a file in place even
    where --out is a mount point, bind mounts included); returns (staged file, destination folder) pairs."""
    (page_stage, parent), (tables_stage, out), (figures_stage, figures_dir) = stages.items()
    drawn = None
    moves = [(p, out) for t in built for p in tables_mod.write(t, tables_stage)]
    if draw:
        from bench import figures  # matplotlib: only when drawing

        staged = figures.build_all([r for _, r in found], figures_stage)
        drawn = [figures_dir / p.name for p in staged]
        moves += [(p, figures_dir) for p in staged]
    for name, text in publish(parent, built, drawn, figures_dir, found, out, records_dir).items():
        moves.append((write_text_atomic(page_stage / name, text), parent))
    return moves


def _unstaged(message: str, stages: dict[Path, Path]) -> str:
    for stage, folder in stages.items():
        message = message.replace(str(stage), str(folder))
    return message


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A staging folder inside `folder` (same disk: a rename puts a file in place), removed after; one that a killed
    run left is swept by the next `hold_folder` of `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=folder) as stage:
        yield Path(stage)


def _move(path: Path, folder: Path) -> Path:
    os.replace(path, folder / path.name)
    return folder / path.name


# A line each file of `publish` holds: a file without it in the folder is someone else's, and is not replaced
OWN_MARKS = {"constraints.txt": "by `bench tables`; do not edit", "index.html": "Written by <code>bench tables</code>"}


def check_replaceable(folder: Path, page: bool) -> None:
    """Refuse (ValueError naming the file) to let `publish` replace a constraints.txt or index.html in `folder` that
    `bench tables` did not write: `--out ~/proj/docs` puts them into ~/proj, which may hold a page of its own."""
    for name in ("constraints.txt", "index.html") if page else ("constraints.txt",):
        path = folder / name
        try:
            with path.open(errors="replace") as handle:
                head = handle.read(1 << 16)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it ({exc.strerror}); nothing was written") from None
        if OWN_MARKS[name] not in head:
            raise ValueError(f"{path} exists and was not written by bench tables, which writes {name} into the "
                             f"folder above --out; move it, or give --out a folder whose parent holds none; nothing "
                             "was written")


def publish(folder: Path, tables: list[Table], drawn: list[Path] | None, figures_dir: Path,
            records: list[tuple[Path, Record]], tables_dir: Path, records_dir: Path) -> dict[str, str]:
    """What `bench tables` writes into `folder` beside its tables, by file name: constraints.txt
    (bench/constraints.py) and, unless `drawn` is None (--no-figures: the page would lack them), index.html with
    every figure in `figures_dir` and `drawn` (where they will be), those not `drawn` from these records marked as
    kept from an earlier run (the gallery needs the run folders, which a clone lacks)."""
    where = install_path(folder / "constraints.txt")
    text = constraints.constraints([r for _, r in records], _link(records_dir, folder), where)
    files = {"constraints.txt": text}
    if drawn is not None:
        figures = sorted({*drawn, *figures_dir.glob("*.svg"), *figures_dir.glob("*.png")})
        files["index.html"] = page(tables, figures, set(drawn), records, folder / "index.html", tables_dir, text,
                                   where)
    return files


def install_path(path: Path) -> str:
    """How `pip install -c` run from the repository root names `path`: relative inside it (results/constraints.txt),
    absolute outside (a `bench tables --out /tmp/x/tables` said results/constraints.txt, a hostile pass)."""
    return from_repo_root(path.resolve())


def _table(t: Table, paths: dict[int, Path], folder: Path, tables_dir: Path) -> str:
    columns = [str(c) for c in t.frame.columns]
    kinds = [_column_kind(c) for c in columns]
    head = "".join(f'<th class="{k}">{escape(c)}</th>' for c, k in zip(columns, kinds))
    body = "".join("<tr>" + "".join(f'<td class="{k}">{escape(str(v))}</td>' for v, k in zip(row, kinds)) + "</tr>"
                   for row in t.frame.itertuples(index=False))
    notes = "".join(f"<li>{escape(str(line))}</li>" for line in t.footer)
    files = " · ".join(f'<a href="{escape(_link(tables_dir / f"{t.name}.{ext}", folder))}">{ext}</a>'
                       for ext in ("md", "csv", "tex"))
    return (f'<section class="table" id="{escape(t.name)}"><h2>{escape(t.title)}</h2>'
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            f'<ul class="notes">{notes}</ul>{_sources(t, paths, folder)}'
            f'<p class="files muted">This table as {files}</p></section>')


def _column_kind(header: str) -> str:
    """`paper` or `ours` for a column holding one side of the comparison (shaded on the page), else ''."""
    words = header.lower()
    if words.startswith("δ") and "ours" not in words:  # a difference we computed from the paper's values: not
        return ""  # a value the paper prints (a hostile pass found "paper Δ row 1" shaded as the paper's)
    return "paper" if "paper" in words and "ours" not in words else "ours" if "ours" in words else ""


def _sources(t: Table, paths: dict[int, Path], folder: Path) -> str:
    """The records behind a table, as its footer carries them (bench/tables.py: FooterLine)."""
    used = list({id(r): r for line in t.footer for r in getattr(line, "records", ()) if id(r) in paths}.values())
    if not used:
        return '<p class="muted">Records behind this table: none listed (its notes say where its values come from).</p>'
    rows = "".join(
        f'<tr><td><a href="{escape(_link(paths[id(r)], folder))}">{escape(_link(paths[id(r)], folder))}</a></td>'
        f"<td>{escape(_commit(r))}</td><td>{escape(str(r.env.created))}</td><td>{escape(r.kind)}</td>"
        f"<td>{escape(r.variant)}</td><td>{escape(machine.label(r.env.fingerprint, r.env.device_name))}</td></tr>"
        for r in sorted(used, key=lambda r: (r.created, str(paths[id(r)]))))
    return (f"<details><summary>The {len(used)} record{'s' if len(used) != 1 else ''} behind this table</summary>"
            '<div class="scroll"><table><thead><tr><th>file</th><th>commit</th><th>recorded (UTC)</th><th>kind</th>'
            f"<th>variant</th><th>machine</th></tr></thead><tbody>{rows}</tbody></table></div></details>")


def _figure(stem: Path, figures: set[Path], folder: Path, kept: bool) -> str:
    files = [f for f in (stem.with_suffix(".svg"), stem.with_suffix(".png")) if f in figures]  # drawn: not yet there
    links = " · ".join(f'<a href="{escape(_link(f, folder))}">{f.suffix[1:].upper()}</a>' for f in files)
    note = " (kept from an earlier run: not drawn from these records, whose run folders it needs)" if kept else ""
    return (f'<figure id="figure-{escape(stem.name)}"><img src="{escape(_link(files[0], folder))}" '
            f'alt="figure {escape(stem.name)}"><figcaption>{escape(stem.name)}{note}: {links}</figcaption></figure>')


def _machines(records: list[Record]) -> str:
    """The machines of the records, one row per fingerprint (records from before fingerprints: per device name)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.env.fingerprint or {}).get("id") or f"{r.env.device_name} (no fingerprint)"].append(r)
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: (min(r.created for r in kv[1]), kv[0])):
        fp, first = rs[0].env.fingerprint or {}, rs[0]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(r.kind for r in rs).items()))
        hardware = (f"{fp.get('gpu_name')}, sm {fp.get('gpu_capability')}, driver {fp.get('gpu_driver')}"
                    if fp.get("device") == "cuda" else
                    f"{fp.get('cores')} cores, ISA {' '.join(fp.get('isa') or [])}, ATen {fp.get('cpu_capability')}"
                    if fp else "not recorded")
        software = "; ".join(sorted({f"torch {r.env.torch}, timm {r.env.timm}, python {r.env.python}" for r in rs}))
        threads = ", ".join(sorted({str(r.env.num_threads) for r in rs}))
        rows.append(f"<tr><td>{escape(machine.label(first.env.fingerprint, first.env.device_name))}</td>"
                    f"<td><code>{escape(key)}</code></td><td>{escape(first.env.cpu or '')}</td>"
                    f"<td>{escape(hardware)}</td><td>{escape(threads)}</td><td>{escape(software)}</td>"
                    f"<td>{escape(kinds)}</td><td>{_date(min(r.created for r in rs))} to "
                    f"{_date(max(r.created for r in rs))}</td></tr>")
    return ('<section id="machines"><h2>Machines</h2><p>Every machine a record was made on, by its fingerprint '
            "(bench/machine.py: what must match for two speed measurements to be compared). Records from before "
            "fingerprints are grouped by their device's name.</p>"
            '<div class="scroll"><table><thead><tr><th>machine</th><th>fingerprint</th><th>CPU</th><th>hardware</th>'
            "<th>torch threads</th><th>software</th><th>records</th><th>dates</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div></section>")


def _commit(r: Record) -> str:
    return (r.env.git_sha or "?")[:10] + (" (dirty)" if r.env.git_dirty else "")


def _date(stamp) -> str:
    return stamp.date().isoformat() if hasattr(stamp, "date") else "—"


def _link(path: Path, folder: Path) -> str:
    """A relative URL from the page's folder (forward slashes on every OS)."""
    return Path(os.path.relpath(path, folder)).as_posix()
