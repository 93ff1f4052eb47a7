"""The results page and the constraints file that `bench tables` writes beside its tables (bench/site.py,
bench/constraints.py), on the committed fixture records; and the page in a real browser (headless Chromium)."""

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import browser
import pandas as pd
import pytest
from packaging.requirements import Requirement
from PIL import Image

from bench import cli, constraints, site, tables
from bench.record import load_record_files, load_records

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "tests" / "fixtures" / "tables" / "records"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """`bench tables` on the fixture records, into results/{tables,figures} of a temporary folder."""
    results = tmp_path_factory.mktemp("results")
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(results / "tables"),
                     "--figures", str(results / "figures")]) == 0
    return results


class Page(HTMLParser):
    """The parts of the page a test reads: tags, their attributes and the text of each table's caption."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.headings: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_bench_tables_writes_the_page_and_the_constraints_beside_its_tables(published):
    assert (published / "index.html").is_file() and (published / "constraints.txt").is_file()
    page = Page((published / "index.html").read_text())
    titles = [t.title for t in tables.build_all(load_records(RECORDS))]
    assert [h for h in page.headings if h in titles] == titles  # every table, in the tables' order
    svgs = sorted(p.name for p in (published / "figures").glob("*.svg"))
    assert svgs and sorted(Path(a["src"]).name for t, a in page.tags if t == "img") == svgs


def test_the_page_loads_nothing_from_elsewhere_and_every_link_resolves(published):
    text = (published / "index.html").read_text()
    page = Page(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert "url(" not in text and "@import" not in text
    links = [a.get("href") or a.get("src") for _, a in page.tags if a.get("href") or a.get("src")]
    outside = [link for link in links if re.match(r"[a-z]+:", link) or link.startswith("//")]
    assert not outside
    missing = [link for link in links if not link.startswith("#") and not (published / link).exists()]
    assert not missing
    anchors = {a["id"] for _, a in page.tags if "id" in a}
    assert {link[1:] for link in links if link.startswith("#")} <= anchors


def test_the_same_records_give_the_same_page_and_constraints(published):
    before = {name: (published / name).read_bytes() for name in ("index.html", "constraints.txt")}
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(published / "tables"),
                     "--figures", str(published / "figures")]) == 0
    assert {name: (published / name).read_bytes() for name in before} == before


def test_each_table_lists_the_records_behind_it_with_file_commit_and_date(published):
    text = (published / "index.html").read_text()
    section = text.split('<section class="table" id="table1_architecture">', 1)[1].split("</section>", 1)[0]
    files = re.findall(r'<td><a href="([^"]+\.json)">', section)
    assert files and all((published / f).is_file() for f in files)
    found = dict((f.name, r) for f, r in load_record_files(RECORDS))
    r = found[Path(files[0]).name]
    assert r.env.git_sha[:10] in section and r.env.created in section
    assert f"The {len(files)} records behind this table" in section


def test_the_page_shows_the_machines_and_the_paper_beside_ours(published):
    text = (published / "index.html").read_text()
    machines = text.split('<section id="machines">', 1)[1].split("</section>", 1)[0]
    records = load_records(RECORDS)
    ids = {r.env.fingerprint["id"] for r in records if r.env.fingerprint}
    assert ids and all(i in machines for i in ids)
    assert '<th class="paper">top-1 paper</th>' in text and '<th class="ours">top-1 ours</th>' in text


def test_only_what_the_paper_prints_is_shaded_as_the_papers():
    """A hostile pass: the difference of two paper values, which the paper does not print, was shaded as its own."""
    assert site._column_kind("paper Ti (ImageNet)") == "paper"
    assert site._column_kind("Δ row 1 of paper Ti (computed here)") == ""
    assert site._column_kind("ours Δ [95 % CI]") == "ours"


def test_the_page_escapes_what_a_record_or_table_holds(tmp_path):
    table = tables.Table("t", "a <b>title</b>", pd.DataFrame([{"model": "<script>alert(1)</script>"}]), ("a & b",))
    html = site.page([table], [], set(), [], tmp_path / "index.html", tmp_path / "tables", "# <pins>")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &lt;b&gt;title&lt;/b&gt;" in html and "a &amp; b" in html and "# &lt;pins&gt;" in html


def test_no_figures_writes_the_constraints_but_no_page(tmp_path, capsys):
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "tables"), "--no-figures"]) == 0
    assert (tmp_path / "constraints.txt").is_file() and not (tmp_path / "index.html").exists()
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "index.html").write_text("<p>an earlier page</p>")  # a hostile pass: left stale without a word
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "tables"), "--no-figures"]) == 0
    assert f"warning: {tmp_path / 'index.html'} and its figures were left as they were" in capsys.readouterr().err


# ---- constraints.txt ----

def _with_env(record, **env):
    return dataclasses.replace(record, env={**record.env, **env})


def test_constraints_pin_a_version_every_record_agrees_on_and_give_a_range_where_they_differ():
    records = load_records(RECORDS)[:3]
    mixed = [_with_env(records[0], torch="2.15.0+cu132"), _with_env(records[1], torch="2.14.1+cu130"),
             _with_env(records[2], torch="2.14.1")]
    text = constraints.constraints(mixed, "runs")
    lines = {line.split("=")[0].split(">")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert lines["torch"] == "torch>=2.14.1,<=2.15.0  # 2.14.1 (1 record), 2.14.1+cu130 (1 record), " \
                             "2.15.0+cu132 (1 record)"
    assert lines["timm"].startswith(f"timm=={records[0].env.timm}  # ")
    assert set(lines) == {"torch", "torchvision", "timm", "fvcore"}


def test_the_committed_constraints_file_is_what_the_committed_records_give_and_pip_reads_it():
    committed = (ROOT / "results" / "constraints.txt").read_text()
    assert committed == constraints.constraints(load_records(ROOT / "results" / "runs"), "runs")
    for line in committed.splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line.split("  #")[0])  # what pip parses; it drops the comment itself
            assert requirement.name in constraints.PACKAGES and requirement.specifier


# ---- in a real browser ----

@pytest.mark.skipif(browser.find() is None, reason="no Chromium to render the page in: apt-get install chromium "
                    "(Debian), or set CHROMIUM=/path/to/chrome")
def test_the_page_renders_in_chromium_without_errors_with_every_table_and_figure_visible(published, tmp_path):
    with browser.Chromium(browser.find()) as chromium:
        chromium.open((published / "index.html").as_uri())
        shown = chromium.evaluate("""[...document.querySelectorAll('section.table > .scroll > table')].map(t => ({
            rows: t.tBodies[0].rows.length, cells: t.querySelectorAll('td').length,
            height: t.getBoundingClientRect().height, width: t.getBoundingClientRect().width}))""")
        images = chromium.evaluate("""[...document.images].map(i => ({src: i.getAttribute('src'),
            loaded: i.complete && i.naturalWidth > 0, height: i.getBoundingClientRect().height}))""")
        overflow = chromium.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        top = chromium.screenshot(tmp_path / "top.png")
        problems = chromium.problems()
    assert problems == []
    assert len(shown) == len(tables.build_all(load_records(RECORDS)))
    assert all(t["rows"] > 0 and t["cells"] > 0 and t["height"] > 0 and t["width"] > 0 for t in shown), shown
    assert images and all(i["loaded"] and i["height"] > 50 for i in images), images
    assert overflow <= 0  # wide tables scroll inside their box; the page itself fits a laptop screen
    with Image.open(top) as shot:
        assert shot.size == (1366, 900)
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # text and shading, not a blank or single-colour page


def test_tables_elsewhere_draw_their_figures_beside_them_and_never_replace_someone_elses_page(tmp_path, capsys):
    """A hostile pass: `--out` elsewhere still redrew the repository's results/figures, and replaced a user's own
    index.html and constraints.txt in the folder above --out."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "index.html").write_text("<html>my own page</html>")
    argv = ["tables", "--records", str(RECORDS), "--out", str(project / "docs")]
    assert cli.main(argv) == 2
    assert "index.html exists and was not written by bench tables" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["index.html"]  # nothing written, the page kept
    (project / "index.html").unlink()
    assert cli.main(argv) == 0
    assert f"and {project} (index.html, constraints.txt)" in capsys.readouterr().out
    assert any((project / "figures").glob("*.svg"))  # beside --out, not ./results/figures
    assert cli.main(argv) == 0  # its own files it replaces


@pytest.fixture(scope="module")
def hostile_tables(tmp_path_factory):
    """`bench tables` once on the fixture records with seven hostile edits (a hostile pass on `bench tables`): a
    record of an unknown variant, a training top-1 of 150, a learning-rate schedule [1, 2, 3] (a figure's
    TypeError), a history without epochs (a KeyError) were left out, averaged in or crashed; two records of one
    cell made at one instant let the file name decide; a throughput of 1e308 was
    shown; a "|" in a CPU's name split a Markdown column; a folder named
    x.json was called an unreadable record. Gives the records' folder, the tables' folder and what it printed to
    stderr."""
    import contextlib
    import io
    import json
    import shutil

    tmp_path = tmp_path_factory.mktemp("hostile")
    records = tmp_path / "records"
    shutil.copytree(RECORDS, records)
    def edit(name, change, as_name=None):
        data = json.loads((RECORDS / name).read_text())
        change(data)
        (records / (as_name or name)).write_text(json.dumps(data))
    edit("20261122T190439-deit_ti-cpu-7308aa98.json", lambda d: d.update(variant="deit_zz"), "zz.json")
    edit("20261122T203245-cifar_vit-cpu-18a662f8.json", lambda d: d["metrics"].update(final_val_top1=150.0))
    edit("20261201T123013-deit_b-config-d0512d2f.json", lambda d: d["settings"].update(lr_schedule=[1, 2, 3]))
    edit("20261122T210950-cifar_vit-cpu-fe26e203.json", lambda d: [h.pop("epoch") for h in d["settings"]["history"]])
    edit("20261122T190455-deit_s-cpu-9a508c37.json", lambda d: d["metrics"].update(params=1), "deit_s-same-time.json")
    edit("20261122T190539-deit_b-cpu-b57c23c6.json",
         lambda d: d["env"].update(cpu="AMD | EPYC", device_name="AMD | EPYC"))
    edit("20261122T190743-deit_b_384-cpu-08095d66.json", lambda d: d["metrics"].update(infer_img_per_s=1e308))
    (records / "folder.json").mkdir()
    shutil.copy(RECORDS / "20261122T190753-deit_ti_dist-cpu-152539ec.json", records / "folder.json" / "inside.json")
    out = tmp_path / "site" / "tables"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["tables", "--records", str(records), "--out", str(out)]) == 0
    return records, out, err.getvalue()


@pytest.mark.parametrize("said", [
    "variant 'deit_zz' is not in the registry",
    "final_val_top1: 150.0 must be a percentage",
    "lr_schedule: item 0: expected [epoch, learning rate], got 1",
    "history: item 0: epoch None is not a whole number of epochs",
    "deit_s-same-time.json are records of deit_s on one machine made at the same instant",
    "infer_img_per_s: 1e+308 is neither infer_img_per_s_median nor _mean",
])
def test_bench_tables_names_the_record_it_leaves_out_and_why(hostile_tables, said):
    assert said in hostile_tables[2]


def test_bench_tables_neither_crashes_on_hostile_records_nor_calls_a_folder_named_json_a_record(hostile_tables):
    err = hostile_tables[2]
    assert "Traceback" not in err and "folder.json" not in err


def test_a_bar_in_a_record_keeps_every_markdown_row_as_wide_as_its_header(hostile_tables):
    out = hostile_tables[1]
    assert any("AMD \\| EPYC" in table.read_text() for table in out.glob("*.md"))
    for table in out.glob("*.md"):
        rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
        assert len({len(re.findall(r"(?<!\\)\|", row)) for row in rows}) <= 1, table.name


def test_bench_tables_refuses_an_out_folder_inside_its_records(hostile_tables, capsys):
    records = hostile_tables[0]
    assert cli.main(["tables", "--records", str(records), "--out", str(records / "tables")]) == 2
    assert "is inside --records" in capsys.readouterr().err
