"""What a training-config field accepts: a rule (`Accepts`) with the words its messages and `reproduce ls --fields`
print, and the rules several fields share. `reproduce/config.py` assigns one to every field (`ACCEPTS`) and its
`check()` enforces them on every resolved config."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Accepts:
    """What one field accepts: `words` for messages and `reproduce ls --fields`; `reason(value)` is None for an
    accepted value, else the words that follow "is not accepted:" (by default "must be <words>")."""

    words: str
    test: Callable[[Any], bool | str]  # True: accepted; False: refused; a string: refused, saying why

    def reason(self, value: Any) -> str | None:
        verdict = self.test(value)
        if verdict is True:
            return None
        return verdict if isinstance(verdict, str) and verdict else f"must be {self.words}"


@dataclass(frozen=True)
class Number(Accepts):
    """A numeric field's rule, with its bounds kept for the tests that probe them."""

    kind: type = float
    low: float = 0
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False


def number(kind: type, low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False,
           optional: bool = False, note: str = "") -> Number:
    """An int or float field: finite (nan and inf never are), within [low, high] (ends open where asked)."""
    if high is not None:
        words = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    elif low == 0:
        words = "positive" if open_low else "non-negative"
    else:
        words = f"greater than {low}" if open_low else f"at least {low}"
    words += " and finite" if kind is float and high is None else ""
    words += " or None" if optional else ""
    words += f" ({note})" if note else ""

    def test(value) -> bool | str:
        if value is None:
            return optional
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            return f"must be {'an int' if kind is int else 'a number'}, {words}"
        return ((isinstance(value, int) or math.isfinite(value))  # an int is finite (and may not fit a float)
                and (value > low if open_low else value >= low)
                and (high is None or (value < high if open_high else value <= high)))
    return Number(words, test, kind, low, high, open_low, open_high, optional)


def one_of(*names: str, note: str = "") -> Accepts:
    return Accepts(f"one of {', '.join(names)}" + (f" ({note})" if note else ""), lambda value: value in names)


FLAG = Accepts("true or false", lambda value: isinstance(value, bool))
PATH = Accepts("a path, or '' for none", lambda value: isinstance(value, str) and "\0" not in value)
PROBABILITY = number(float, 0, 1)



def _optimizer(name) -> bool | str:
    """timm's `create_optimizer_v2` names, `lookahead_` prefix allowed, that can be built here (the apex `fused*` and
    bitsandbytes `bnb*` ones need CUDA and their package)."""
    if not isinstance(name, str):
        return False
    from timm.optim import get_optimizer_class, list_optimizers  # here: timm loads only where a config is checked

    base = name.lower().removeprefix("lookahead_")  # timm reads 'x_adamw' as adamw; only lookahead_ means something
    if base not in list_optimizers():
        close = difflib.get_close_matches(base, list_optimizers(), n=3)
        return f"must be {OPTIMIZER.words}" + (f"; did you mean {', '.join(close)}?" if close else "")
    if base == "adahessian":
        return "adahessian needs a backward pass with create_graph=True, which the training step does not do"
    try:
        get_optimizer_class(base, bind_defaults=False)
    except (ImportError, AssertionError) as exc:
        return f"timm's {base} cannot run here: {exc}"
    return True


def _augmentation(spec) -> bool | str:
    """'' or a spec timm's create_transform builds, every section a key and a number: timm silently skips a section
    without a number ('rand-m9-foo' is plain 'rand-m9')."""
    if spec == "":
        return True
    if not isinstance(spec, str):
        return False
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    name, *sections = spec.split("-")
    for section in sections:
        if not any(c.isdigit() for c in section) and not (name == "rand" and section.startswith("t")):
            return f"section {section!r} has no number, so timm would skip it silently; must be {AUGMENTATION.words}"
    build = (rand_augment_transform if spec.startswith("rand") else
             augment_and_mix_transform if spec.startswith("augmix") else auto_augment_transform)
    try:
        build(spec, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        return f"timm cannot build it ({exc or type(exc).__name__}); must be {AUGMENTATION.words}"
    return True


def _eval_protocol(value) -> bool:
    from bench.data import EVAL_PROTOCOLS  # bench's evaluation owns its preprocessing protocols

    return value in EVAL_PROTOCOLS


def _crop_scale(value) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and 0 < value[0] <= value[1] <= 1)


def _parameter_names(value) -> bool | str:
    if not (isinstance(value, tuple) and all(isinstance(v, str) and v.replace(".", "_").isidentifier() for v in value)):
        return False
    twice = sorted({v for v in value if value.count(v) > 1})
    return f"{', '.join(twice)} is given twice; must be {PARAMETER_NAMES.words}" if twice else True


def _block_indices(value) -> bool | str:
    if not (isinstance(value, tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return False
    twice = sorted({v for v in value if value.count(v) > 1})
    return f"block {', '.join(map(str, twice))} is given twice; must be {BLOCKS.words}" if twice else True


OPTIMIZER = Accepts("a timm optimizer name (timm.optim.list_optimizers(); lookahead_NAME wraps it) that runs here, "
                    "not adahessian", _optimizer)
AUGMENTATION = Accepts("'' (none) or a timm augmentation spec: rand-m9-mstd0.5-inc1 (RandAugment), "
                       "original-mstd0.5 (AutoAugment), augmix-m5", _augmentation)
BLOCKS = Accepts("distinct block indices separated by commas (negative from the end), at least one", _block_indices)
CROP_SCALE = Accepts("two numbers low,high with 0 < low <= high <= 1", _crop_scale)
PARAMETER_NAMES = Accepts("parameter names separated by commas (e.g. pos_embed,cls_token), or empty", _parameter_names)
EVAL_PROTOCOL = Accepts("one of bench's evaluation protocols (official, timm)", _eval_protocol)
