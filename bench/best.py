"""`bench run --best`: the fastest setting that gives the same answer, found within a time budget.

The search changes only what changes speed, never the model or its weights: the precision (among those the hardware
runs natively), how the model is compiled (`SEARCHED`), how attention is computed (`set_attention`) and the batch
size. It goes in stages, each starting from the fastest settings so far:

1. every native precision, eager, at the protocol's batch;
2. every compile mode for the two fastest precisions;
3. the other attention implementation, in every compile mode, for the fastest precision;
4. the batch: halved, and doubled while it gains (and fits, on a GPU), up to --max-batch-cap.

Each trial builds a fresh runner, warms it up (compilation happens there and is not timed) and times a few forwards
(`TRIAL_ITERS`). A trial that fails or runs out of memory is recorded with its error; once the budget is spent, the
remaining trials are recorded as skipped. The budget bounds the trials; after them the fastest three are timed again
side by side, one forward of each in turn (`_confirmed`), and the winner is timed with the protocol's full loop by
`bench run`.

"Fastest" never means "wrong": before a setting is chosen its logits on a few images (`--data`: real ones; else
seeded noise, which checks the numerics only) are compared with fp32 eager's. It must keep the median relative
logit error within its precision's tolerance (`TOLERANCE`), and change no top-1 prediction except a near tie (one
whose fp32 margin between the top two classes is under 4 x tolerance x the logits' RMS, a change that precision's
rounding can make). Otherwise the next fastest is checked.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench import speed
from bench.compiling import compiled
from bench.errors import DataError
from bench.load import is_contended
from bench.machine import Fingerprint
from bench.protocols import PRECISIONS, setting_label

# How each mode compiles: bench/compiling.py (torch.compile with static shapes, one compilation per batch size).
SEARCHED = {"cpu": ("off", "default", "freezing", "max-autotune"),
            "cuda": ("off", "default", "reduce-overhead", "max-autotune")}
TRIAL_WARMUP = {"cpu": 2, "cuda": 10}  # untimed forwards per trial (the first compiles)
TRIAL_ITERS = {"cpu": 3, "cuda": 20}  # timed forwards per trial: a ranking, not the record's figure
GAIN = 1.02  # stage 4 keeps doubling the batch while it is this much faster than half of it
CONFIRM = 3  # the fastest trials timed again side by side before one is chosen
CONFIRM_ROUNDS = {"cpu": 6, "cuda": 30}
AGREEMENT_IMAGES = 32
AGREE_AT_MOST = 4  # settings the agreement check tries before falling back to fp32 eager
# Median relative logit error (L2, per image) against fp32 eager that a precision may cause: about 5x what the
# --best records of results/REPORT.md show for bf16 (0.01) and what fp32 compiled or tf32/fp16 kernels round to.
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 5e-2}


@dataclass(frozen=True)
class Candidate:
    """One setting the search may choose."""

    precision: str
    compile: str  # "off" or one of protocols.COMPILE_MODES
    batch_size: int
    attention: str = "sdpa"  # one of protocols.ATTENTIONS, or "none" for a model without timm attention

    def label(self) -> str:
        return setting_label(self.precision, self.compile, self.batch_size, self.attention)


@dataclass(frozen=True)
class Trial:
    """One candidate's outcome: its images/s (None unless timed), the wall time it took (compilation included)."""

    candidate: Candidate
    stage: str
    status: str  # "timed", "skipped: budget", "out of memory" or "failed: <error>"
    img_per_s: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Agreement:
    """A setting's logits against fp32 eager's on the same images."""

    candidate: Candidate
    images: int
    inputs: str  # where the images came from
    top1_agreement: float  # fraction of images with the same top-1 class
    near_tie_flips: int  # top-1 changes on near ties (allowed)
    confident_flips: int  # top-1 changes beyond a near tie (not allowed)
    median_rel_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.confident_flips == 0 and self.median_rel_error <= self.tolerance


@dataclass(frozen=True)
class Search:
    """What `--best` tried, what it chose and why the choice is trusted."""

    trials: tuple[Trial, ...]
    agreements: tuple[Agreement, ...]  # the last one passed and is the choice's
    chosen: Candidate
    budget_s: float
    spent_s: float
    lead: float | None  # the chosen setting's side-by-side speed over the next one's (None: no side-by-side timing)
    other_cores: float | None  # cores other processes kept busy while trials timed (median; None: unknown)
    busy: bool | None  # so busy that the ranking may be wrong (bench/load.py: is_contended; None: unknown)

    def to_dict(self) -> dict:
        return {"chosen": dataclasses.asdict(self.chosen), "budget_s": self.budget_s, "spent_s": round(self.spent_s, 1),
                "lead": None if self.lead is None else round(self.lead, 4),
                "other_cores": None if self.other_cores is None else round(self.other_cores, 3),
                "busy": self.busy,
                "trials": [{**dataclasses.asdict(t.candidate), "stage": t.stage, "status": t.status,
                            "img_per_s": t.img_per_s, "seconds": round(t.seconds, 1)} for t in self.trials],
                "agreement": [{**dataclasses.asdict(a), "candidate": a.candidate.label(), "passed": a.passed}
                              for a in self.agreements]}


class NothingAgrees(RuntimeError):
    """No timed setting agreed with fp32 eager."""


def precisions(fingerprint: Fingerprint) -> tuple[str, ...]:
    """The precisions the hardware runs natively: emulated bf16 (an AVX2 CPU) is slower, not a candidate."""
    if fingerprint.device == "cuda":
        return ("tf32", "amp_bf16", "bf16", "amp_fp16", "fp16") if fingerprint.native_bf16 else ("fp32", "amp_fp16",
                                                                                                  "fp16")
    return ("fp32", "amp_bf16", "bf16") if fingerprint.native_bf16 else ("fp32",)


@dataclass(frozen=True)
class Space:
    """Where the search may go: the precisions and compile modes to try, and the batch to start from (fixed: no
    batch stage)."""

    precisions: tuple[str, ...]
    compile_modes: tuple[str, ...]
    attentions: tuple[str, ...]  # the first is tried everywhere, the others with the fastest precision
    batch_size: int
    batch_fixed: bool
    max_batch: int  # the batch stage stops here (--max-batch-cap)
    img_size: int
    device: str


def search(model: nn.Module, space: Space, *, budget_s: float, check_inputs: tuple[torch.Tensor, str],
           log: Callable[[str], None]) -> Search:
    """Try settings until the budget is spent, then choose the fastest one whose logits agree with fp32 eager's.

    Args:
        model: the fp32 model in eval mode on `space.device` (copied for each precision, never changed).
        check_inputs: normalised images for the agreement check and what they are ("32 images of PATH").

    Raises:
        NothingAgrees: no timed setting agreed (or none could be timed).
    """
    clock = _Clock(budget_s)
    trials = Trials(model, space, clock, log)
    _stages(trials, space)
    ranked = _confirmed(model, trials, space)
    # no reading at all (/proc/stat unreadable): the load is unknown, not quiet (a review)
    others, steal = (statistics.median(v) for v in zip(*trials.loads)) if trials.loads else (None, None)
    busy = None if others is None else is_contended(others, steal, 1.0, cuda=space.device.startswith("cuda"))
    if busy:
        log(f"best: other processes kept {others:.1f} cores busy during the search (steal {steal:.0%}): its ranking "
            "may be wrong; search again on a quiet machine")
    agreements, reference = [], fp32_logits(model, check_inputs[0])
    for trial in _checked_in_order(ranked, space):
        agreement = agree(model, trial.candidate, check_inputs, reference)
        agreements.append(agreement)
        log(f"best: {trial.candidate.label()} against fp32 eager on {agreement.inputs}: top-1 agreement "
            f"{agreement.top1_agreement:.1%}, median logit error {agreement.median_rel_error:.2g} "
            f"(tolerance {agreement.tolerance:g}), {agreement.confident_flips} confident flip(s): "
            f"{'chosen' if agreement.passed else 'rejected'}")
        if agreement.passed:
            return Search(tuple(trials.done), tuple(agreements), trial.candidate, budget_s, clock.spent(),
                          _lead(trial, trials.done), others, busy)
    if not agreements:
        failed = "; ".join(f"{t.candidate.label()}: {t.status}" for t in trials.done)
        raise NothingAgrees(f"no setting could be timed ({failed})")
    raise NothingAgrees("no setting the search timed gives fp32 eager's answers: "
                        + "; ".join(f"{a.candidate.label()}: {a.confident_flips} confident flips, median logit error "
                                    f"{a.median_rel_error:.2g}" for a in agreements))


def _checked_in_order(ranked: list[Trial], space: Space) -> list[Trial]:
    """The settings the agreement check tries, fastest first: the `AGREE_AT_MOST` fastest, then fp32 eager (which
    agrees with itself), so that a string of rejections costs a few compilations, not dozens. Where fp32 eager was
    not a trial (a GPU searches tf32, not fp32) it is the untimed last resort, timed afterwards by `bench run`."""
    if not ranked:
        return []
    plain = [t for t in ranked if t.candidate.precision == "fp32" and t.candidate.compile == "off"]
    fallback = plain[:1] or [Trial(Candidate("fp32", "off", space.batch_size, space.attentions[0]), "fallback",
                                   "not timed: fp32 eager, the reference itself")]
    return ranked[:AGREE_AT_MOST] + [t for t in fallback if t not in ranked[:AGREE_AT_MOST]]


def _lead(chosen: Trial, trials: list[Trial]) -> float | None:
    """How much faster the chosen setting was than the next one, side by side (1.01: a tie on a noisy machine)."""
    side_by_side = sorted((t.img_per_s for t in trials if t.stage == "confirm"), reverse=True)
    if chosen.stage != "confirm" or len(side_by_side) < 2 or chosen.img_per_s != side_by_side[0]:
        return None
    return side_by_side[0] / side_by_side[1]


def _stages(trials: Trials, space: Space) -> None:
    """The trials of the module docstring's four stages, in order."""
    base = space.batch_size
    eager = [trials.run(Candidate(p, "off", base, space.attentions[0]), "precision") for p in space.precisions]
    ranked = [t.candidate.precision for t in sorted(_timed(eager), key=lambda t: -t.img_per_s)]
    for precision in ranked[:2] or space.precisions[:1]:
        for mode in space.compile_modes:
            if mode != "off":
                trials.run(Candidate(precision, mode, base, space.attentions[0]), "compile")
    fastest = max(_timed(trials.done), key=lambda t: t.img_per_s, default=None)
    for attention in space.attentions[1:] if fastest else ():
        for mode in space.compile_modes:
            trials.run(dataclasses.replace(fastest.candidate, compile=mode, attention=attention), "attention")
    if not space.batch_fixed:
        _batch_stage(trials, space)


def _confirmed(model: nn.Module, trials: Trials, space: Space) -> list[Trial]:
    """Every timed trial, fastest first, after the fastest `CONFIRM` are timed again side by side: one forward of each
    in turn, `CONFIRM_ROUNDS` rounds, ranked by the median time per image. A machine whose speed changes from one
    moment to the next (results/REPORT.md, 2026-12-05, eighth session) then slows them alike, where separate trials
    could each have caught a different spell. Their confirmed speeds join the trials."""
    ranked = sorted(_timed(trials.done), key=lambda t: -t.img_per_s)
    top = [t.candidate for t in ranked[:CONFIRM]]
    if len(top) < 2:
        return ranked
    started, kind = time.perf_counter(), space.device.split(":")[0]
    try:
        per_image = _side_by_side(model, top, space, CONFIRM_ROUNDS[kind])
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:  # keep the trials' order, say why
        trials.log(f"best: the side-by-side re-timing failed ({type(exc).__name__}); ranking by the trials alone")
        return ranked
    seconds = (time.perf_counter() - started) / len(top)
    confirmed = [Trial(c, "confirm", "timed", 1 / statistics.median(t), seconds) for c, t in zip(top, per_image)]
    for trial in confirmed:
        trials.done.append(trial)
        trials.log(f"best [confirm] {trial.candidate.label()}: {trial.img_per_s:.1f} im/s side by side")
    rest = [t for t in ranked if t.candidate not in top]
    return sorted(confirmed, key=lambda t: -t.img_per_s) + rest


def _side_by_side(model: nn.Module, candidates: list[Candidate], space: Space, rounds: int) -> list[list[float]]:
    """Seconds per image of each candidate in each round (one forward of each per round, after a warm-up)."""
    torch._dynamo.reset()
    kind = space.device.split(":")[0]
    runners = []
    for c in candidates:
        precision = PRECISIONS[c.precision]
        runners.append((_copy(model, c), speed.Batch(c.batch_size, space.img_size, space.device, precision).make(),
                        precision))
    times: list[list[float]] = [[] for _ in candidates]
    with torch.inference_mode():
        for round_ in range(TRIAL_WARMUP[kind] + rounds):
            for (runner, example, precision), out in zip(runners, times):
                with speed.precision_mode(precision, kind):
                    if kind == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    runner(example)
                    if kind == "cuda":
                        torch.cuda.synchronize()
                    if round_ >= TRIAL_WARMUP[kind]:
                        out.append((time.perf_counter() - start) / len(example))
    del runners
    torch._dynamo.reset()
    return times


def _batch_stage(trials: Trials, space: Space) -> None:
    """Half the fastest setting's batch, then doubled while it gains `GAIN` and stays within the cap (on a GPU, also
    while it fits)."""
    best = max(_timed(trials.done), key=lambda t: t.img_per_s, default=None)
    if best is None:
        return
    start = best.candidate
    if start.batch_size > 1:
        trials.run(dataclasses.replace(start, batch_size=start.batch_size // 2), "batch")
    previous, size = best, start.batch_size * 2
    while size <= space.max_batch:
        trial = trials.run(dataclasses.replace(start, batch_size=size), "batch")
        if trial.img_per_s is None or trial.img_per_s < GAIN * previous.img_per_s:
            return
        previous, size = trial, size * 2


def _timed(trials) -> list[Trial]:
    return [t for t in trials if t.img_per_s is not None]


class _Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> bool:
        return self.spent() < self.budget_s


class Trials:
    """Runs candidates one at a time, each in a fresh copy of the model, and keeps every outcome."""

    def __init__(self, model: nn.Module, space: Space, clock: _Clock, log: Callable[[str], None]):
        self.model, self.space, self.clock, self.log = model, space, clock, log
        self.done: list[Trial] = []
        # (other processes' cores, steal) during each trial's timed forwards: the machine's load, read where no
        # compiler runs (the search's own cc1plus/ld children counted as "other processes" over the whole search)
        self.loads: list[tuple[float, float]] = []

    def run(self, candidate: Candidate, stage: str) -> Trial:
        if self.done and not self.clock.left():  # the first always runs: a search has a result to check
            trial = Trial(candidate, stage, "skipped: budget")
        else:
            trial = self._time(candidate, stage)
        self.done.append(trial)
        what = f"{trial.img_per_s:.1f} im/s" if trial.img_per_s is not None else trial.status
        self.log(f"best [{stage}] {candidate.label()}: {what} ({trial.seconds:.0f} s; "
                 f"{self.clock.spent():.0f} of {self.clock.budget_s:.0f} s spent)")
        return trial

    def _time(self, candidate: Candidate, stage: str) -> Trial:
        started, kind = time.perf_counter(), self.space.device.split(":")[0]
        batch = speed.Batch(candidate.batch_size, self.space.img_size, self.space.device,
                            PRECISIONS[candidate.precision])
        try:
            with _fresh(self.model, candidate) as runner:
                timing = speed.time_forward(runner, batch, warmup=TRIAL_WARMUP[kind], iters=TRIAL_ITERS[kind])
        except torch.cuda.OutOfMemoryError:
            return Trial(candidate, stage, "out of memory", None, time.perf_counter() - started)
        except Exception as exc:  # a compiler that cannot build a mode is an outcome of the search, not its end
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return Trial(candidate, stage, f"failed: {type(exc).__name__}: {message}", None,
                         time.perf_counter() - started)
        if timing.other_cores is not None:
            self.loads.append((timing.other_cores, timing.steal or 0.0))
        return Trial(candidate, stage, "timed", timing.img_per_s("median"), time.perf_counter() - started)


def set_attention(model: nn.Module, kind: str) -> int:
    """Run every timm attention block of `model` as `kind` (protocols.ATTENTIONS): `sdpa`, one fused
    scaled_dot_product_attention call, or `matmul`, q·kᵀ, softmax and ·v as separate operations. The same
    arithmetic; which is faster depends on the hardware and the precision (results/REPORT.md). Returns how many
    blocks were set (0: the model has no timm attention, e.g. a convnet)."""
    blocks = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for block in blocks:
        block.fused_attn = kind == "sdpa"
    return len(blocks)


def _copy(model: nn.Module, candidate: Candidate) -> nn.Module:
    copied = copy.deepcopy(model).to(dtype=PRECISIONS[candidate.precision].dtype)
    set_attention(copied, candidate.attention)
    return compiled(copied, candidate.compile)


@contextlib.contextmanager
def _fresh(model: nn.Module, candidate: Candidate) -> Iterator[nn.Module]:
    """A copy of `model` in the candidate's weight dtype and attention, compiled as it says; compiled code dropped
    after."""
    torch._dynamo.reset()
    copied = _copy(model, candidate)
    try:
        yield copied
    finally:
        del copied
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def fp32_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """fp32 eager's logits on the check images: what every candidate is compared with (computed once per search)."""
    device = next(model.parameters()).device
    with torch.inference_mode(), speed.precision_mode(PRECISIONS["fp32"], device.type):
        return model(images.to(device)).float()


def agree(model: nn.Module, candidate: Candidate, check_inputs: tuple[torch.Tensor, str],
          reference: torch.Tensor) -> Agreement:
    """The candidate's logits against fp32 eager's (`reference`) on the check images, in batches of the candidate's
    size."""
    images, inputs = check_inputs
    device = next(model.parameters()).device
    images = images.to(device)
    precision = PRECISIONS[candidate.precision]
    with _fresh(model, candidate) as runner, torch.inference_mode(), speed.precision_mode(precision, device.type):
        outputs = [runner(_padded(chunk, candidate.batch_size).to(precision.dtype))[:len(chunk)].float().clone()
                   for chunk in images.split(candidate.batch_size)]
    return compare(reference, torch.cat(outputs), candidate, inputs)


def _padded(chunk: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The chunk at the compiled batch size (static shapes: a last, smaller chunk would compile again)."""
    if len(chunk) == batch_size:
        return chunk
    return torch.cat([chunk, chunk[-1:].expand(batch_size - len(chunk), *chunk.shape[1:])])


def compare(reference: torch.Tensor, outputs: torch.Tensor, candidate: Candidate, inputs: str) -> Agreement:
    """Top-1 agreement, near-tie and confident flips, and the median relative logit error (module docstring)."""
    tolerance = TOLERANCE[PRECISIONS[candidate.precision].peak]
    top2 = reference.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    rms = reference.pow(2).mean(dim=1).sqrt()
    flips = outputs.argmax(dim=1) != reference.argmax(dim=1)
    near_tie = margin < 4 * tolerance * rms
    errors = ((outputs - reference).norm(dim=1) / reference.norm(dim=1).clamp_min(1e-12)).tolist()
    return Agreement(candidate, len(reference), inputs, 1 - flips.float().mean().item(),
                     int((flips & near_tie).sum()), int((flips & ~near_tie).sum()), statistics.median(errors),
                     tolerance)


def check_images(model: nn.Module, img_size: int, data: Path | None, samples: list[tuple[Path, int]] | None,
                 count: int = AGREEMENT_IMAGES) -> tuple[torch.Tensor, str]:
    """`count` images for the agreement check, preprocessed as the model's evaluation does: spread evenly over
    `samples` (the --data images found for accuracy) or over every image under `data`, or seeded noise where no data
    was given."""
    if data is not None and not samples:  # the check needs images, not labels: any label space will do
        from bench.data import IMAGE_SUFFIXES

        samples = [(p, 0) for p in sorted(data.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not samples:
            raise DataError(f"--data {data} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not samples:
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(count, 3, img_size, img_size, generator=generator),
                f"{count} noise images (no --data: a numerics check, not an accuracy one)")
    from bench import data as data_module

    picked = samples[::max(1, len(samples) // count)][:count]
    prep = data_module.preprocess(model, img_size, "official")
    dataset = data_module.ImageList(picked, data_module.build_transform(prep))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images, f"{len(picked)} images of {data}"
