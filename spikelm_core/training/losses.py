"""Distillation loss terms (the teacher is dense; the student's hidden states are means over T).

All functions take plain tensors and are independent of the Trainer, so they are tested directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the rows kept by `mask`.

    student, teacher: [..., C] logits. mask: boolean [...] selecting rows (e.g. masked tokens of an
    MLM batch); None keeps every row. For regression (C = 1) the term is the MSE of the outputs.
    """
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"student has {student.shape[-1]} outputs, teacher {teacher.shape[-1]}")
    s = student.reshape(-1, student.shape[-1]).float()
    t = teacher.reshape(-1, teacher.shape[-1]).float()
    if mask is not None:
        keep = mask.reshape(-1)
        s, t = s[keep], t[keep]
    if s.shape[0] == 0:
        return student.sum() * 0.0
    if s.shape[-1] == 1:
        return F.mse_loss(s, t)
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2


def _layer_pairs(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], what: str):
    """zip(student, teacher) of per-layer tensors, refusing lists of different lengths."""
    if len(student) != len(teacher):
        raise ValueError(f"student returns {len(student)} {what}, teacher {len(teacher)}")
    return zip(student, teacher)


def _token_mean(values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-token `values` [..., B, L] over real (unpadded) tokens and any leading dims."""
    if attention_mask is None:
        return values.mean()
    m = attention_mask.to(values.dtype)
    return (values * m).sum() / (m.sum().clamp_min(1.0) * (values.numel() // m.numel()))


def hidden_mse(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None,
               relative: bool = False) -> torch.Tensor:
    """Mean over layers of the MSE between hidden states [B, L, D], over real (unpadded) tokens.

    A student state may carry its time steps in front ([T, B, L, D], `distill.hidden_match: steps`):
    every step is then matched to the teacher's state and the MSE is also averaged over the steps.
    `relative` (`distill.hidden_norm: relative`): each layer's MSE is divided by the teacher's mean
    square at that layer (same tokens), a relative error, so every layer weighs the same whatever
    the scale of its states."""
    total = student[0].new_zeros(())
    for s, t in _layer_pairs(student, teacher, "hidden states"):
        if s.shape[-t.dim():] != t.shape or s.dim() > t.dim() + 1:
            raise ValueError(f"hidden state shapes differ: student {tuple(s.shape)}, teacher {tuple(t.shape)}")
        err = (s.float() - t.float()).pow(2).mean(-1)  # [B, L], or [T, B, L] per time step
        term = _token_mean(err, attention_mask)
        if relative:
            term = term / _token_mean(t.float().pow(2).mean(-1), attention_mask).clamp_min(1e-12)
        total = total + term
    return total / len(student)


def attention_mse(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over layers of the MSE between attention probabilities [B, H, L, L], over every element
    (padded query rows too, as the method's distillation loss writes it; `attention_kl` averages over
    real query tokens only)."""
    total = student[0].new_zeros(())
    for s, t in _layer_pairs(student, teacher, "attention maps"):
        if s.shape != t.shape:
            raise ValueError(f"attention shapes differ: student {tuple(s.shape)}, teacher {tuple(t.shape)}")
        total = total + F.mse_loss(s.float(), t.float())
    return total / len(student)


def attention_kl(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                 attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over layers of KL(teacher || student) between attention distributions [B, H, L, L]
    (MiniLM's self-attention distillation, over every layer): for each head and real (unpadded)
    query token, the KL divergence of its distribution over keys, averaged over heads and query tokens.

    Scale-free where the probability MSE is not: a row's MSE shrinks with the sequence length, its KL
    does not. Student probabilities are clamped at 1e-12 before the log (a spiking student's mean over
    T of softmax rows has no exact zeros on real keys, but a masked key has)."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in _layer_pairs(student, teacher, "attention maps"):
        if s.shape != t.shape:
            raise ValueError(f"attention shapes differ: student {tuple(s.shape)}, teacher {tuple(t.shape)}")
        t = t.float()
        log_s = s.float().clamp_min(1e-12).log()
        log_t = t.clamp_min(1e-12).log()
        row_kl = (t * (log_t - log_s)).sum(-1).mean(1)  # [B, L]: summed over keys, averaged over heads
        total = total + _token_mean(row_kl, attention_mask)
    return total / len(student)
