"""The layers point one way (STYLE.md 16): the measuring and reporting package never imports training."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_of_bench_imports_reproduce():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] == "reproduce")
                 for p in sorted((ROOT / "bench").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_papers_numbers_live_in_one_module():
    """A few of the paper's numbers, each of which used to be written in two or three places."""
    for number in ("2536.5", "609.31", "0.171, 0.182", "74.3, 73.9"):
        holders = [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("*/*.py"))
                   if p.parts[-2] in ("bench", "reproduce") and number in p.read_text()]
        assert holders == ["bench/paper.py"], (number, holders)
