"""Padded [B, L] batches, declared padding, the session mean, and torch's reduction aliases.

Metamorphic tests: a padded batch with a mask (or a padding label) equals the flat call on the valid items
with one session per row; moving padding around, adding padding, or padding scores of any value (inf, NaN)
changes nothing.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pairloss.nn as pnn
import pairloss.nn.functional as PF

LOSSES = {
    "logistic": lambda *a, **k: PF.pairwise_logistic_loss(*a, **k),
    "hinge": lambda *a, **k: PF.pairwise_hinge_loss(*a, margin=0.7, **k),
    # NDCG over each row's real items: padding changes neither ranks nor the ideal DCG
    "lambdarank": lambda *a, **k: PF.lambdarank_loss(*a, topn=3, **k),
}


def _flat(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The obviously correct packing: the valid items of each row, in order, and their counts."""
    return scores[mask], labels[mask], mask.sum(1)


@st.composite
def padded_batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = draw(st.integers(1, 5))
    width = draw(st.integers(2, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, width, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, draw(st.integers(1, 4)), (rows, width), generator=g)
    mask = torch.rand(rows, width, generator=g) < draw(st.floats(0.2, 1.0))
    return scores, labels, mask


@pytest.mark.parametrize("loss", LOSSES)
@given(batch=padded_batches())
def test_padded_with_mask_equals_flat_with_lengths(loss: str, batch: tuple[torch.Tensor, ...]) -> None:
    scores, labels, mask = batch
    fn = LOSSES[loss]
    flat = _flat(scores, labels, mask)
    for reduction in ("none", "sum", "mean"):
        torch.testing.assert_close(fn(scores, labels, mask=mask, reduction=reduction),
                                   fn(*flat, reduction=reduction), rtol=1e-12, atol=1e-12)
    # gradients: the flat call's gradients land on the valid items; padded items get exactly 0
    a = scores.clone().requires_grad_()
    fn(a, labels, mask=mask, reduction="sum").backward()
    b = flat[0].clone().requires_grad_()
    fn(b, flat[1], flat[2], reduction="sum").backward()
    torch.testing.assert_close(a.grad[mask], b.grad, rtol=1e-12, atol=1e-12)
    assert torch.all(a.grad[~mask] == 0)


@pytest.mark.parametrize("loss", LOSSES)
@given(batch=padded_batches())
def test_padding_label_equals_mask_and_padding_values_do_not_matter(loss: str, batch: tuple[torch.Tensor, ...]
                                                                    ) -> None:
    scores, labels, mask = batch
    fn = LOSSES[loss]
    expected = fn(scores, labels, mask=mask, reduction="none")
    as_label = torch.where(mask, labels, -1)
    torch.testing.assert_close(fn(scores, as_label, padding_label=-1, reduction="none"), expected)
    hostile = torch.where(mask, scores, torch.tensor([float("nan"), float("inf"), -float("inf")])
                          .repeat(scores.numel())[: scores.numel()].reshape(scores.shape).double())
    s = hostile.clone().requires_grad_()
    out = fn(s, as_label, padding_label=-1, reduction="none")
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert torch.isfinite(s.grad).all() and torch.all(s.grad[~mask] == 0)


@pytest.mark.parametrize("loss", LOSSES)
def test_moving_and_adding_padding_changes_nothing(loss: str) -> None:
    fn = LOSSES[loss]
    scores = torch.tensor([[2.0, 0.5, -1.0, 9.0], [1.0, 3.0, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([[2, 0, 1, -1], [1, 0, -1, -1]])
    base = fn(scores, labels, padding_label=-1, reduction="none")
    perm = torch.tensor([3, 0, 2, 1])  # padding first, order within the row shuffled
    torch.testing.assert_close(fn(scores[:, perm], labels[:, perm], padding_label=-1, reduction="none"), base)
    wider = torch.cat([scores, torch.zeros(2, 3, dtype=torch.float64)], 1)
    wider_labels = torch.cat([labels, torch.full((2, 3), -1)], 1)
    torch.testing.assert_close(fn(wider, wider_labels, padding_label=-1, reduction="none"), base)
    # the mask and the padding label combine: an item is real when unmasked and not labelled -1
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    expected = fn(torch.tensor([2.0, -1.0, 1.0, 3.0], dtype=torch.float64), torch.tensor([2, 1, 1, 0]),
                  torch.tensor([2, 2]), reduction="none")
    torch.testing.assert_close(fn(scores, labels, mask=mask, padding_label=-1, reduction="none"), expected)


def test_flat_scores_with_mask_keep_their_sessions() -> None:
    scores = torch.tensor([2.0, 1.0, 7.0, 0.0, 3.0, 3.0, 5.0], dtype=torch.float64)
    labels = torch.tensor([1, 0, 4, 0, 2, 2, 9])
    mask = torch.tensor([True, True, False, True, True, True, False])
    lengths = torch.tensor([4, 3])
    got = PF.pairwise_logistic_loss(scores, labels, lengths, mask=mask, reduction="none")
    want = PF.pairwise_logistic_loss(scores[mask], labels[mask], torch.tensor([3, 2]), reduction="none")
    torch.testing.assert_close(got, want)
    one_session = PF.pairwise_logistic_loss(scores, labels, mask=mask, reduction="none")
    torch.testing.assert_close(one_session, PF.pairwise_logistic_loss(scores[mask], labels[mask], reduction="none"))


def test_modules_take_mask_and_padding_label() -> None:
    scores = torch.tensor([[0.5, 0.0, 2.0], [1.0, 0.0, 4.0]])
    labels = torch.tensor([[1, 0, -1], [0, 1, 1]])
    loss = pnn.PairwiseHingeLoss(margin=1.0, reduction="none", padding_label=-1)
    torch.testing.assert_close(loss(scores, labels), torch.tensor([0.5, 1.0]))  # row 1: (2 + 0) / 2
    assert repr(loss) == "PairwiseHingeLoss(margin=1.0, reduction='none', padding_label=-1)"
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pnn.PairwiseLogisticLoss(reduction="none")(scores, labels.clamp_min(0), mask=mask),
                               PF.pairwise_logistic_loss(scores, labels.clamp_min(0), mask=mask, reduction="none"))


def test_all_padding_rows_and_one_item_rows_give_zero_and_do_not_count_in_the_mean() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 1.0, 2.0]], requires_grad=True)
    labels = torch.tensor([[-1, -1, -1], [2, -1, -1], [2, 1, 0]])
    per_row = PF.pairwise_logistic_loss(scores, labels, padding_label=-1, reduction="none")
    assert per_row[0].item() == per_row[1].item() == 0.0
    mean = PF.pairwise_logistic_loss(scores, labels, padding_label=-1)
    torch.testing.assert_close(mean, per_row[2])  # one row with pairs: the mean is its loss
    mean.backward()
    assert torch.all(scores.grad[:2] == 0)


# ---- the session mean ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
def test_mean_is_over_sessions_with_pairs(loss: str) -> None:
    fn = LOSSES[loss]
    scores = torch.tensor([0.3, -0.2, 1.5, 4.0, 4.0, 2.0, 9.0, -3.0, 0.1], dtype=torch.float64)
    labels = torch.tensor([1, 0, 2, 1, 1, 5, 3, 0, 1])  # sessions: pairs, all tied, one item, empty, pairs
    lengths = torch.tensor([3, 2, 1, 0, 3])
    per = fn(scores, labels, lengths, reduction="none")
    torch.testing.assert_close(fn(scores, labels, lengths), (per[0] + per[4]) / 2)
    # appending sessions without pairs does not change the mean
    more = fn(torch.cat([scores, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)]),
              torch.cat([labels, torch.tensor([7, 7, 7])]), torch.tensor([3, 2, 1, 0, 3, 3, 0]))
    torch.testing.assert_close(more, fn(scores, labels, lengths))
    # no session with a pair: 0 (not NaN), with zero gradient
    s = scores[3:5].clone().requires_grad_()
    zero = fn(s, labels[3:5], torch.tensor([2, 0]))
    zero.backward()
    assert zero.item() == 0.0 and torch.all(s.grad == 0)
    assert fn(torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.int64)).item() == 0.0


def test_mean_counts_a_satisfied_hinge_session() -> None:
    # a session whose pairs all meet the margin has loss 0 but pairs: it counts in the mean
    scores = torch.tensor([5.0, 0.0, 0.0, 1.0])
    labels = torch.tensor([1, 0, 1, 0])
    per = PF.pairwise_hinge_loss(scores, labels, torch.tensor([2, 2]), reduction="none")
    assert per[0].item() == 0.0 and per[1].item() == 2.0
    assert PF.pairwise_hinge_loss(scores, labels, torch.tensor([2, 2])).item() == 1.0


def test_mean_tie_rule_matches_the_kernel_for_float_labels() -> None:
    eps = 2.0**-23
    labels = torch.tensor([1.0, 1.0 + eps / 2, 0.0, eps], dtype=torch.float64)  # session 0: tied; session 1: a pair
    per = PF.pairwise_logistic_loss(torch.zeros(4, dtype=torch.float64), labels, torch.tensor([2, 2]),
                                    reduction="none")
    assert per[0].item() == 0.0 and per[1].item() > 0
    torch.testing.assert_close(PF.pairwise_logistic_loss(torch.zeros(4, dtype=torch.float64), labels,
                                                         torch.tensor([2, 2])), per[1])


# ---- reduction aliases ----------------------------------------------------------------------------------
def test_elementwise_mean_is_mean_with_torchs_warning() -> None:
    x1, x2, y = torch.tensor([0.2, 1.0]), torch.tensor([0.5, 0.1]), torch.tensor([1.0, -1.0])
    with pytest.warns(UserWarning, match=r"reduction='elementwise_mean' is deprecated. Please use reduction='mean'"):
        ours = PF.margin_ranking_loss(x1, x2, y, margin=0.3, reduction="elementwise_mean")
    with pytest.warns(UserWarning, match="elementwise_mean"):
        theirs = torch.nn.functional.margin_ranking_loss(x1, x2, y, margin=0.3, reduction="elementwise_mean")
    torch.testing.assert_close(ours, theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = pnn.PairwiseLogisticLoss(reduction="elementwise_mean")  # no warning at construction, as torch
    with pytest.warns(UserWarning, match="elementwise_mean"):
        value = module(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    torch.testing.assert_close(value, PF.pairwise_logistic_loss(torch.tensor([0.0, 1.0]), torch.tensor([1, 0])))


# ---- labels and padding errors ------------------------------------------------------------------------
def test_negative_labels_need_a_declaration() -> None:
    scores, labels = torch.zeros(2, 3), torch.tensor([[1, 0, -1], [2, 2, 0]])
    with pytest.raises(ValueError, match=r"labels must be >= 0 .*got -1 at flat index 2; declare padding with "
                                         r"mask=\.\.\. or padding_label=\.\.\."):
        PF.pairwise_logistic_loss(scores, labels)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        PF.pairwise_hinge_loss(torch.zeros(3), torch.tensor([1.0, -1.0, 0.0]))  # flattened allRank padding
    with pytest.raises(ValueError, match=r"got -2 .*only declared padding may be negative"):
        PF.pairwise_logistic_loss(scores, torch.tensor([[1, 0, -1], [-2, 2, 0]]), padding_label=-1)
    # masked-out items may hold anything
    PF.pairwise_logistic_loss(scores, labels, mask=labels >= 0)


def test_padded_argument_errors_name_the_argument() -> None:
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"lengths cannot be combined with padded scores of shape \(2, 3\)"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), torch.tensor([3, 3]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask must have the shape of the scores \[B, L\] = \(2, 3\)"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have one entry per score, shape \(4,\)"):
        PF.pairwise_logistic_loss(torch.zeros(4), torch.zeros(4), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="padding_label must be a finite number"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), padding_label=float("nan"))
    with pytest.raises(TypeError, match="padding_label must be a finite number"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), padding_label="-1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one device"):
        PF.pairwise_logistic_loss(s, torch.zeros(2, 3), mask=torch.ones(2, 3, dtype=torch.bool, device="meta"))


def test_a_column_with_a_mask_is_a_padded_batch_of_one_item_rows() -> None:
    # (N, 1) scores are a column of N items in one session; with a (B, 1) mask they are B rows of one item
    column, labels = torch.tensor([[1.0], [0.0]]), torch.tensor([[1], [0]])
    assert PF.pairwise_logistic_loss(column, labels, reduction="none").shape == (1,)
    rows = PF.pairwise_logistic_loss(column, labels, mask=torch.ones(2, 1, dtype=torch.bool), reduction="none")
    assert rows.tolist() == [0.0, 0.0]
