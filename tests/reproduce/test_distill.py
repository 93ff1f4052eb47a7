import math

import pytest
import torch

from reproduce.distill import Distiller, LabelTeacher, distillation_loss

CLS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
DIST = [[1.0, 1.5, 0.0], [-0.5, 0.0, 2.0]]
TEACHER = [[0.0, 3.0, 1.0], [1.0, 0.0, 0.5]]  # argmax: 1, 0
LABELS = [0, 2]


def log_softmax(row, tau=1.0):
    z = [v / tau for v in row]
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def ce(rows, labels):
    return sum(-log_softmax(r)[y] for r, y in zip(rows, labels)) / len(rows)


def kl_sum(student, teacher, tau):  # Σ_batch Σ_class p_t (log p_t − log p_s)
    total = 0.0
    for s, t in zip(student, teacher):
        ls, lt = log_softmax(s, tau), log_softmax(t, tau)
        total += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    return total


def loss(mode, student, target, alpha=0.5, tau=1.0, kl_norm="official"):
    return distillation_loss(student, torch.tensor(TEACHER), target, mode=mode, alpha=alpha, tau=tau,
                             kl_norm=kl_norm).item()


PAIR = (torch.tensor(CLS), torch.tensor(DIST))
Y = torch.tensor(LABELS)


def test_none_is_the_label_loss_of_the_class_head():
    assert loss("none", PAIR, Y) == pytest.approx(ce(CLS, LABELS), rel=1e-6)


def test_hard_puts_the_teachers_argmax_on_the_distillation_head():
    expected = 0.5 * ce(CLS, LABELS) + 0.5 * ce(DIST, [1, 0])
    assert loss("hard", PAIR, Y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kl_norm,divisor", [("batchmean", 2), ("official", 2 * 3)])
def test_soft_scales_kl_by_tau_squared_over_batch_or_batch_times_classes(kl_norm, divisor):
    tau, alpha = 3.0, 0.1  # the paper's soft setting
    expected = (1 - alpha) * ce(CLS, LABELS) + alpha * kl_sum(DIST, TEACHER, tau) * tau**2 / divisor
    assert loss("soft", PAIR, Y, alpha=alpha, tau=tau, kl_norm=kl_norm) == pytest.approx(expected, rel=1e-6)


def test_a_class_token_only_student_takes_both_terms_on_its_one_head():
    expected = 0.5 * ce(CLS, LABELS) + 0.5 * ce(CLS, [1, 0])
    assert loss("hard", torch.tensor(CLS), Y) == pytest.approx(expected, rel=1e-6)


def test_mixed_soft_targets_use_soft_target_cross_entropy():
    soft = [[0.7, 0.1, 0.2], [0.0, 0.4, 0.6]]
    base = sum(-sum(t * l for t, l in zip(ts, log_softmax(r))) for ts, r in zip(soft, CLS)) / 2
    expected = 0.5 * base + 0.5 * ce(DIST, [1, 0])
    assert loss("hard", PAIR, torch.tensor(soft)) == pytest.approx(expected, rel=1e-6)


def test_no_gradient_reaches_the_teacher():
    teacher = torch.tensor(TEACHER, requires_grad=True)
    cls, dist = (torch.tensor(v, requires_grad=True) for v in (CLS, DIST))
    distillation_loss((cls, dist), teacher, Y, mode="soft", alpha=0.5, tau=2.0, kl_norm="batchmean").backward()
    assert teacher.grad is None and cls.grad is not None and dist.grad is not None


class FixedTeacher(torch.nn.Module):
    def forward(self, images):
        return torch.tensor(TEACHER)


@pytest.mark.parametrize("target,agree", [
    ([1, 2], 0.5),  # teacher says 1, 0
    ([1, 0], 1.0),
    ([[0.3, 0.7, 0.0], [0.4, 0.0, 0.6]], 0.5),  # Mixup: the label with the larger weight (1, 2)
])
def test_the_distiller_reports_how_often_the_teachers_hard_label_is_the_true_one(target, agree):
    distiller = Distiller("hard", 0.5, 1.0, "official", FixedTeacher())
    step = distiller(torch.zeros(2, 3, 4, 4), PAIR, torch.tensor(target))
    assert step.teacher_agree.item() == agree
    assert step.total.item() == pytest.approx(0.5 * step.base.item() + 0.5 * step.term.item(), rel=1e-6)


@pytest.mark.parametrize("target,hard", [([0, 2], [0, 2]), ([[0.3, 0.7, 0.0], [0.6, 0.0, 0.4]], [1, 0])])
def test_the_label_teacher_hands_the_distillation_head_the_true_label(target, hard):
    step = Distiller("hard", 0.5, 1.0, "official", LabelTeacher())(torch.zeros(2, 3, 4, 4), PAIR, torch.tensor(target))
    assert step.term.item() == pytest.approx(ce(DIST, hard), rel=1e-6)
    assert step.teacher_agree.item() == 1.0


def test_without_a_teacher_there_is_no_teacher_term_and_no_agreement():
    step = Distiller("none", 0.5, 1.0, "official", None)(torch.zeros(2, 3, 4, 4), PAIR, Y)
    assert step.term is None and step.teacher_agree is None and step.total is step.base


@pytest.mark.parametrize("kwargs,message", [
    (dict(mode="medium"), "accepted: none, soft, hard"),
    (dict(mode="soft", kl_norm="mean"), "accepted: batchmean, official"),
])
def test_bad_modes_are_named(kwargs, message):
    args = dict(mode="hard", alpha=0.5, tau=1.0, kl_norm="official") | kwargs
    with pytest.raises(ValueError, match=message):
        distillation_loss(PAIR, torch.tensor(TEACHER), Y, **args)


def smoothed_ce(rows, labels, eps):  # (1 − ε)·CE(one-hot) + ε·mean over classes of −log p
    return sum((1 - eps) * -log_softmax(r)[y] + eps * sum(-v for v in log_softmax(r)) / len(r)
               for r, y in zip(rows, labels)) / len(rows)


def test_hard_smoothing_softens_the_teachers_label_and_nothing_else():
    plain = distillation_loss(PAIR, torch.tensor(TEACHER), Y, mode="hard", alpha=0.5, tau=1.0, kl_norm="official")
    smooth = distillation_loss(PAIR, torch.tensor(TEACHER), Y, mode="hard", alpha=0.5, tau=1.0, kl_norm="official",
                               hard_smoothing=0.1)
    assert plain.item() == pytest.approx(0.5 * ce(CLS, LABELS) + 0.5 * ce(DIST, [1, 0]), rel=1e-6)
    assert smooth.item() == pytest.approx(0.5 * ce(CLS, LABELS) + 0.5 * smoothed_ce(DIST, [1, 0], 0.1), rel=1e-6)
    step = Distiller("hard", 0.5, 1.0, "official", LabelTeacher(), hard_smoothing=0.1)(torch.zeros(2, 3, 4, 4), PAIR, Y)
    assert step.term.item() == pytest.approx(smoothed_ce(DIST, LABELS, 0.1), rel=1e-6)
