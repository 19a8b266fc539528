"""`run_distill`: knowledge distillation from a dense teacher into a spiking student.

On a GLUE task the teacher is a dense BERT fine-tuned on that task (a `*ForSequenceClassification`
checkpoint); the student is a spiking checkpoint or, usually, the spiking twin of a dense model
(often the teacher itself, converted with the recipe's neuron settings). Without a GLUE task the
distillation runs on a text corpus with a masked-LM teacher (see `pretrain.run_mlm_training`).
The loss is in `trainers.DistillTrainer`; the run directory is as for `run_finetune`.
"""

from __future__ import annotations

from ..config.schema import DistillArgs, DistillConfig
from ..convert.bert import read_config
from ..data.glue import get_glue_task
from ..errors import CheckpointError, ConfigError
from ..hub import resolve_model_source
from .common import RunResult
from .finetune import run_glue_training


def load_teacher(source: str, kind: str, distill: DistillArgs):
    """The dense teacher: 'classification' (a fine-tuned *ForSequenceClassification) or 'mlm'."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    model_dir = resolve_model_source(source)
    cfg = read_config(model_dir)
    archs = cfg.get("architectures") or []
    if kind == "classification" and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CheckpointError(
            f"the teacher '{source}' has no sequence-classification head (architectures: {', '.join(archs) or 'none'})",
            hint="distill from a dense BERT fine-tuned on the task (saved as *ForSequenceClassification)",
        )
    auto = AutoModelForSequenceClassification if kind == "classification" else AutoModelForMaskedLM
    kwargs = {"attn_implementation": "eager"} if distill.alpha_attn > 0 else {}
    try:
        teacher = auto.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the teacher '{source}': {exc}") from exc
    return teacher.eval()


def check_teacher(teacher, student, distill: DistillArgs, *, num_labels: int | None, source: str) -> None:
    """Teacher and student must share the vocabulary (and label count, and shapes the loss compares)."""
    t, s = teacher.config, student.config
    problems = []
    if t.vocab_size != s.vocab_size:
        problems.append(f"vocabulary: teacher {t.vocab_size} tokens, student {s.vocab_size}")
    if num_labels is not None and t.num_labels != num_labels:
        problems.append(f"labels: teacher {t.num_labels}, task {num_labels}")
    if distill.alpha_hidden > 0 or distill.alpha_attn > 0:
        if t.num_hidden_layers != s.num_hidden_layers:
            problems.append(f"layers: teacher {t.num_hidden_layers}, student {s.num_hidden_layers} "
                            "(hidden/attention terms compare layer by layer)")
        if distill.alpha_hidden > 0 and t.hidden_size != s.hidden_size:
            problems.append(f"hidden size: teacher {t.hidden_size}, student {s.hidden_size}")
        if distill.alpha_attn > 0 and t.num_attention_heads != s.num_attention_heads:
            problems.append(f"attention heads: teacher {t.num_attention_heads}, student {s.num_attention_heads}")
    if problems:
        raise CheckpointError(
            f"the teacher '{source}' does not match the student",
            details=problems,
            hint="use a teacher built on the student's vocabulary and task (e.g. the dense model the student "
            "was converted from, fine-tuned on the task); set distill.alpha_hidden / alpha_attn to 0 when only "
            "the shapes differ",
        )


def run_distill(cfg: DistillConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Distill `cfg.distill.teacher` into the spiking student `cfg.model` on `cfg.glue_task`
    (or on the text corpus `cfg.data.source` with masked-LM when no GLUE task is set)."""
    from .trainers import DistillTrainer

    if cfg.distill.teacher is None:
        raise ConfigError("distill.teacher is required")
    if cfg.summarization_task is not None:
        from .summarization import run_summarization_training

        return run_summarization_training(cfg, resume=resume, callbacks=callbacks, command="distill",
                                          distill=cfg.distill)
    if cfg.glue_task is None:
        from .pretrain import run_mlm_training

        return run_mlm_training(cfg, resume=resume, callbacks=callbacks, distill=cfg.distill, command="distill")
    spec = get_glue_task(cfg.glue_task)
    teacher = load_teacher(cfg.distill.teacher, "classification", cfg.distill)

    def factory(**kwargs):
        check_teacher(teacher, kwargs["model"], cfg.distill, num_labels=spec.num_labels, source=cfg.distill.teacher)
        return DistillTrainer(**kwargs, teacher=teacher, distill=cfg.distill, schedule_steps=cfg.train.schedule_steps)

    return run_glue_training(cfg, resume=resume, callbacks=callbacks, trainer_factory=factory, command="distill")
