"""The ablation tables, each declared once: which experiments make its rows, which head of each is read, what the
rows are compared with. `bench tables` renders every table listed in `ABLATIONS` (`bench.trained_tables.ablation`), and
`bench figures` draws the seed curves of those that name a figure; neither knows any of them by name.

The experiments themselves are registered in `reproduce/experiments.py`; `bench` never imports it, so
`tests/test_table_names.py` checks every experiment named here (and every one the paper's tables read) against
that registry: a renamed experiment fails a test instead of turning its row into "not run". Adding an ablation is
one `Versus(...)` or `Paired(...)` below (`docs/extending.md`, "An ablation table"). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One row: the seeds of `experiment`, read at `metric` (`final_val_top1_fused_logits` for the fused head of a
    distilled model); `short` names its line in a figure (default: the experiment)."""

    label: str
    experiment: str
    metric: str = "final_val_top1"
    short: str = ""


@dataclass(frozen=True)
class Versus:
    """Rows each compared with `control` trained in the same kind (precision, device, torch); `teachers` head the
    table and are compared with nothing. Columns: row, experiment, `value` (mean ± std over seeds), the difference
    to `versus`, where it was trained."""

    name: str  # file stem under results/tables/
    title: str
    control: str  # the experiment every other row is compared with; one of the rows
    rows: tuple[Row, ...]
    teachers: tuple[Row, ...] = ()
    notes: tuple[str, ...] = ()
    value: str = "top-1"
    versus: str = "control"  # how the Δ column names the control
    figure: tuple[str, str] | None = None  # (file stem, title) of its seed curves under results/figures/

    def experiments(self) -> list[str]:
        return [row.experiment for row in self.teachers + self.rows] + [self.control]


@dataclass(frozen=True)
class Paired:
    """Two experiments that differ in one thing, read at the same heads: a row per head, `changed` against `base`
    in the table's main kind. `base` and `changed` are (column header, experiment)."""

    name: str
    title: str
    heads: tuple[tuple[str, str], ...]  # (label, metric)
    base: tuple[str, str]
    changed: tuple[str, str]
    head: str = "head"  # the header of the heads' column
    versus: str = "changed − base"  # how the Δ column names the difference

    def experiments(self) -> list[str]:
        return [self.base[1], self.changed[1]]


Ablation = Versus | Paired

ABLATIONS: tuple[Ablation, ...] = (
    Paired(  # does the released code's class-token initialisation move Table 3's token rows?
        "table_cls_init_mini", "Class-token initialisation, Table 3 rows 4–6 (mini scale)",
        heads=(("class embedding", "final_val_top1_cls"), ("distillation embedding", "final_val_top1_dist"),
               ("class + distillation", "final_val_top1_fused_logits")),
        base=("cls token N(0, 1e-6) (timm)", "mini_hard_init_timm"),
        changed=("cls token trunc. normal 0.02 (released code)", "mini_hard_init_official"),
        head="DeiT⚗ head", versus="released − timm"),
    Versus(  # distillation through a ViT teacher's attention maps, beside Table 3's rows at mini scale
        "table_attention_mini", "Attention distillation at mini scale (an ablation, not the paper's method)",
        control="mini_none",
        rows=(Row("no distillation (Table 3 row 1)", "mini_none"),
              Row("hard, CNN teacher, distillation token (Table 3 rows 4–6, class + distil)", "mini_hard",
                  "final_val_top1_fused_logits"),
              Row("hard, CNN teacher retrained for the class-token ablation (its own checkpoint), timm init, class + distil",
                  "mini_hard_init_timm", "final_val_top1_fused_logits"),
              Row("attention distillation only, ViT teacher", "mini_attn"),
              Row("hard, ViT teacher, distillation token (class + distil)", "mini_vit_hard",
                  "final_val_top1_fused_logits"),
              Row("attention + hard, ViT teacher (class + distil)", "mini_attn_hard", "final_val_top1_fused_logits")),
        teachers=(Row("teacher of the CNN rows: convnet", "mini_teacher", short="convnet"),
                  Row("teacher of the ViT rows: ViT, 9 blocks", "mini_vit_teacher", short="ViT, 9 blocks")),
        notes=("Not the paper's method: the paper distils a convnet's logits through a distillation token; this "
               "table matches a ViT teacher's attention maps.",),
        value="top-1 (mini)", versus="no distillation",
        figure=("attention_mini", "Attention distillation at mini scale (not the paper's method)")),
)


def get(name: str) -> Ablation:
    """The ablation whose table is `name` (its file stem). Raises KeyError naming the ones there are."""
    for spec in ABLATIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no ablation table {name!r}; there are {', '.join(s.name for s in ABLATIONS)}")
