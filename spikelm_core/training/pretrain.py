"""`run_pretrain`: masked-LM (optionally + next-sentence) pretraining of a spiking BERT on local text
(`mlm.MlmPipeline`), optionally distilled from a dense MLM teacher."""

from __future__ import annotations

from ..config import PretrainConfig
from .mlm import MlmPipeline
from .pipeline import run_training
from .results import RunResult


def run_pretrain(cfg: PretrainConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Pretrain a spiking BERT with masked-LM (+ NSP when `cfg.mlm.nsp`) on `cfg.data.source`."""
    return run_training(MlmPipeline(cfg, "pretrain", distill=cfg.distill), resume=resume, callbacks=callbacks)
