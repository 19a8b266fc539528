"""Training on the Hugging Face Trainer: `run_finetune`, `run_distill`, `run_pretrain`, `run_eval`.

Each entry point takes a task config (spikelm_core.config) and returns a result dataclass; the
library never prints. Modules: `args` (recipe -> TrainingArguments), `trainers` (Trainer
subclasses), `callbacks` (metrics.jsonl, firing rate), `losses` (distillation terms).
"""

from .common import RunResult
from .distill import run_distill
from .evaluate import EvalResult, run_eval
from .finetune import run_finetune
from .pretrain import run_pretrain

__all__ = ["EvalResult", "RunResult", "run_distill", "run_eval", "run_finetune", "run_pretrain"]
