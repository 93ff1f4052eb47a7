"""No function of the packages takes more than eight parameters: a longer list is an object waiting to be named
(`bench.protocols.Request`, `reproduce.train.Run`), and a list threaded by position is one swap from a silent bug."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MOST = 8
MODULES = sorted(p for package in ("bench", "reproduce") for p in (ROOT / package).glob("*.py"))


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Its parameters as a caller passes them: not `self` or `cls`, `*args`/`**kwargs` counted once each."""
    a = function.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_function_takes_more_than_eight_parameters(path):
    long = {f"{node.name} (line {node.lineno})": len(parameters(node))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(parameters(node)) > MOST}
    assert long == {}


def test_the_count_sees_keyword_only_and_starred_parameters():
    tree = ast.parse("def f(a, /, b, *c, d, e=1, **f): pass\nclass C:\n    def m(self, a): pass")
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert [parameters(f) for f in functions] == [["a", "b", "d", "e", "*c", "**f"], ["a"]]
