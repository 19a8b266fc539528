"""Distillation loss terms against hand-computed values; the schedule with a longer horizon."""

from __future__ import annotations

import math

import pytest
import torch

from spikelm_core.training.losses import attention_kl, attention_mse, hidden_mse, logit_kd
from spikelm_core.training.trainers import linear_schedule_with_horizon


def test_logit_kd_matches_hand_computed_kl():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 1.0, 0.0]])
    T = 2.0
    ps = torch.softmax(s / T, -1)
    pt = torch.softmax(t / T, -1)
    expected = float((pt * (pt.log() - ps.log())).sum()) * T * T
    assert logit_kd(s, t, T).item() == pytest.approx(expected, rel=1e-6)
    assert logit_kd(t, t, T).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_kd_masks_rows_and_regresses_with_mse():
    s = torch.randn(2, 5, 7)
    t = s.clone()
    t[0, 1, 0] += 3.0  # the only differing row
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    assert logit_kd(s, t, 1.0, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert logit_kd(s, t, 1.0).item() > 0
    assert logit_kd(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]]), 3.0).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="outputs"):
        logit_kd(torch.zeros(1, 3), torch.zeros(1, 2), 1.0)


def test_hidden_mse_ignores_padding_and_attention_mse():
    a = torch.zeros(1, 3, 4)
    b = torch.zeros(1, 3, 4)
    b[0, 2] = 10.0  # a padded position
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse((a, a), (b, a), mask).item() == 0.0
    b[0, 0] = 2.0  # a real position: per-token MSE 4, mean over 2 real tokens = 2, over 2 layers = 1
    assert hidden_mse((a, a), (b, a), mask).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="hidden states"):
        hidden_mse((a,), (a, a), mask)
    # relative, by hand: layer 0's MSE is 2 (above) and the teacher's mean square over its real tokens
    # is (4 + 0) / 2 = 2, so 1; layer 1 matches exactly (0 over a clamped 0); mean over layers 0.5
    assert hidden_mse((a, a), (b, a), mask, relative=True).item() == pytest.approx(0.5)
    c = 3.0 * b  # the same relative error at three times the scale
    assert hidden_mse((a, a), (c, a), mask, relative=True).item() == pytest.approx(0.5)
    assert hidden_mse((a, a), (c, a), mask).item() == pytest.approx(9.0)
    p = torch.full((1, 2, 3, 3), 1 / 3)
    q = p.clone()
    q[..., 0] += 0.3
    assert attention_mse((p,), (q,)).item() == pytest.approx(0.09 / 3, rel=1e-5)


def test_attention_kl_by_hand_over_real_queries():
    # B=1, H=2, L=3; the third token is padding (no key weight, its query row ignored)
    t = torch.zeros(1, 2, 3, 3)
    t[..., :2] = torch.tensor([0.75, 0.25])
    s = torch.zeros(1, 2, 3, 3)
    s[..., :2] = 0.5
    s[0, 1] = t[0, 1]               # the second head agrees with the teacher
    s[0, :, 2] = torch.tensor([0.1, 0.1, 0.8])  # a padded query row: ignored
    mask = torch.tensor([[1, 1, 0]])
    row = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # head 1; head 2 gives 0
    assert attention_kl((s, t), (t, t), mask).item() == pytest.approx(row / 2 / 2, rel=1e-5)  # 2 heads, 2 layers
    assert attention_kl((t,), (t,), mask).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="attention maps"):
        attention_kl((t,), (t, t), mask)


def test_linear_schedule_over_a_longer_horizon():
    f = linear_schedule_with_horizon(5000, 500_000)
    assert f(0) == 0.0 and f(2500) == 0.5 and f(5000) == 1.0
    assert math.isclose(f(100_000), 400_000 / 495_000)  # the released run stops at lr ~ 1.62e-4
    assert math.isclose(2e-4 * f(100_000), 1.616e-4, rel_tol=1e-3)
    assert f(500_000) == 0.0 and f(600_000) == 0.0
