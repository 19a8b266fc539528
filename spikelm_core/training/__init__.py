"""Training on the Hugging Face Trainer: `run_finetune`, `run_distill`, `run_pretrain`, `run_eval`
(and `run_generation`, eval's `--prompt` mode).

Each entry point takes a task config (spikelm_core.config) and returns a result dataclass; the
library never prints. The verbs (`finetune`, `distill`, `pretrain`, `evaluate`) only dispatch to a
data family (`glue`, `mlm`, `seq2seq`, `causal_lm`), each of which fills in the one skeleton of
`pipeline`; the run directory is `rundir.RunDirectory`, results are in `results`. Other modules: `args` (recipe ->
TrainingArguments), `trainers` (Trainer subclasses), `callbacks` (metrics.jsonl, firing rate),
`losses` (distillation terms), `firing_target` (the firing-rate penalty), `recipes` (the bundled
recipes).
"""

from .distill import run_distill
from .evaluate import run_eval, run_generation
from .finetune import run_finetune
from .pretrain import run_pretrain
from .results import EvalResult, GenerationResult, RunResult

__all__ = ["EvalResult", "GenerationResult", "RunResult", "run_distill", "run_eval", "run_finetune",
           "run_generation", "run_pretrain"]
