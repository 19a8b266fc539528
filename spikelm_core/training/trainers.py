"""Trainer subclasses: `SpikelmTrainer` (schedule horizon, non-finite loss guard, loss-part logs,
firing-rate target) and `DistillTrainer` (knowledge distillation from a dense teacher).

They extend `transformers.Trainer` through its documented hooks (`create_scheduler`,
`training_step`, `compute_loss`, `log`) and copy none of its loop, so DDP/FSDP/DeepSpeed,
mixed precision, checkpointing and resume keep coming from transformers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from ..config.schema import DistillArgs
from ..data.augment import FLAG
from ..errors import SpikelmError
from ..io import follow_umask
from ..log import get_logger
from ..models.common import layer_local_gradients
from ..neurons import spike_drop
from .callbacks import mean_over_ranks
from .firing_target import FiringTarget, LayerRateRecorder
from .rundir import own_best_checkpoint
from .losses import attention_kl, attention_mse, hidden_mse, logit_kd
from .weight_average import WeightAverage

log = get_logger("training")

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class NonFiniteLossError(SpikelmError):
    """Training produced a NaN or infinite loss; the run stopped before updating the weights."""

    exit_code = 1


def linear_schedule_with_horizon(warmup_steps: int, horizon: int):
    """lr factor: linear warmup 0 -> 1 over `warmup_steps`, then linear decay to 0 at `horizon`.

    The horizon may exceed the steps actually run (the released pretraining: 5k warmup over a
    500k horizon, stopped at 100k, where the factor is 400000/495000 = 0.8081).
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (horizon - step) / max(1, horizon - warmup_steps))

    return factor


@contextmanager
def _dropping(logger: logging.Logger, prefix: str):
    """Leave out `logger`'s records whose message starts with `prefix` while the block runs."""
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class SpikelmTrainer(Trainer):
    """`Trainer` with five additions:

    - `schedule_steps`: a linear schedule over a horizon other than the run length;
    - a finite-loss guard: a NaN/inf loss raises `NonFiniteLossError` before the optimizer step,
      so the weights stay those of the last good step and the last checkpoint stays intact;
    - loss parts (unweighted terms, e.g. ce/kd, from `training_loss`) averaged into each training
      log as `loss_<part>`;
    - `firing_target`: a penalty on the training batch's per-layer firing rates
      (`firing_target.py`), added as `firing_target.weight * loss_firing`;
    - `weight_average`: while a `WeightAverageCallback` keeps one (`train.weight_average`), every
      evaluation scores the averaged weights (`weight_average.py`).

    Our models read no loss kwargs (they never normalise by `num_items_in_batch`), which is said
    explicitly so the Trainer does not rescale their losses.
    """

    def __init__(self, *args, schedule_steps: int | None = None, firing_target: FiringTarget | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.remove_callback(PrinterCallback)  # the library never prints; the CLI shows progress
        self.remove_callback(ProgressCallback)
        self.schedule_steps = schedule_steps
        self.model_accepts_loss_kwargs = False
        self._part_sums: dict[str, float] = {}
        self._part_count = 0
        self.firing_target = firing_target
        self._layer_rates = LayerRateRecorder(self.model) if firing_target is not None else None
        self.weight_average: WeightAverage | None = None  # set and cleared by WeightAverageCallback
        self._eval_depth = 0

    def evaluate(self, *args, **kwargs):
        """`Trainer.evaluate`, on the averaged weights while training keeps an average (the outermost
        call swaps them in: one evaluation of several dev sets calls this once per set)."""
        average = self.weight_average if self._eval_depth == 0 else None
        self._eval_depth += 1
        try:
            with average.swapped_in(self.model) if average is not None else nullcontext():
                return super().evaluate(*args, **kwargs)
        finally:
            self._eval_depth -= 1

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`; a checkpoint of a run that averages its weights gets the average
        beside the raw weights, before `trainer_state.json` marks the checkpoint complete."""
        super().save_model(output_dir, _internal_call)
        if self.weight_average is not None and _internal_call and output_dir and self.args.should_save:
            self.weight_average.save(output_dir)
        if output_dir and self.args.should_save and os.path.isdir(output_dir):
            follow_umask(Path(output_dir))  # safetensors writes its file private (0600): a shared run folder

    def _save_rng_state(self, output_dir: str) -> None:
        """`Trainer._save_rng_state`, then a barrier: under DDP each rank writes its own
        rng_state_<rank>.pth while the main process goes on to write trainer_state.json, which marks
        the checkpoint complete (`rundir.checkpoint_is_complete`); without the barrier a kill in between
        leaves a "complete" checkpoint lacking another rank's random state."""
        super()._save_rng_state(output_dir)
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def _init_training_state(self, *args, **kwargs):
        """`Trainer._init_training_state`, with the resumed state's best checkpoint found in this run's own
        folder: trainer_state.json keeps its absolute path, so a run moved or copied would keep (or, moved,
        drop) a best checkpoint of its old folder and end with other weights than it would have."""
        resume = kwargs.get("resume_from_checkpoint", args[3] if len(args) > 3 else None)
        if resume is None:
            return super()._init_training_state(*args, **kwargs)
        with _dropping(logging.getLogger("transformers.trainer"), "The best checkpoint "):  # said below instead
            result = super()._init_training_state(*args, **kwargs)
        self.state.best_model_checkpoint = own_best_checkpoint(resume)
        return result

    def _run_epoch(self, *args, **kwargs):
        """`Trainer._run_epoch`, skipped once the run has taken all its steps. A run resumed from the
        checkpoint of its last step (killed before final/ was written, or `--resume auto` on a
        finished run) has nothing left to train, but the Trainer's epoch loop checks for the end only
        after a step, so it would take one more and change the weights; this way it goes straight to
        the end of training (the best checkpoint, the weight average) as an uninterrupted run does."""
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        epoch = kwargs.get("epoch", args[1] if len(args) > 1 else None)
        if epoch is not None and hasattr(self.data_collator, "set_epoch"):  # before the epoch's loader is made
            self.data_collator.set_epoch(epoch)  # (masked-LM: each epoch's masks, from its seed)
        return super()._run_epoch(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.schedule_steps is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        if num_training_steps > self.schedule_steps and self.is_world_process_zero():
            log.warning("train.schedule_steps %d ends the linear schedule before the run's %d steps: its last %d "
                        "step(s) train at learning rate 0 (raise schedule_steps, or lower max_steps or epochs)",
                        self.schedule_steps, num_training_steps, num_training_steps - self.schedule_steps)
        factor = linear_schedule_with_horizon(self.args.get_warmup_steps(self.schedule_steps), self.schedule_steps)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            last = get_last_checkpoint(self.args.output_dir) if self.args.output_dir else None
            step = self.state.global_step + 1
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at step {step}; the run stopped before that update",
                details=[f"last good checkpoint: {last}" if last else "no checkpoint was saved before this step"],
                hint="lower train.lr, set train.grad_clip (e.g. 1.0), or check the data; "
                + ("--resume auto continues from the last good checkpoint" if last else
                   "no checkpoint to continue from: start again in another --out-dir (or delete this one)"),
            )
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Evaluation: the model's own loss. Training: `training_loss`, plus the firing-rate penalty
        when a target is set; the parts are logged."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.firing_target is None:
            loss, outputs, parts = self.training_loss(model, inputs, num_items_in_batch)
        else:
            with self._layer_rates:
                loss, outputs, parts = self.training_loss(model, inputs, num_items_in_batch)
            parts["firing"] = self.firing_target.penalty(self._layer_rates.layer_rates())
            loss = loss + self.firing_target.weight * parts["firing"].to(loss.dtype)
        if parts:
            self.record_loss_parts(parts)
        return (loss, outputs) if return_outputs else loss

    def training_loss(self, model, inputs, num_items_in_batch=None):
        """(loss, outputs, {part: unweighted term}) of one training batch: here the model's own loss,
        with the terms a model reports beside it (BERT pretraining: `mlm_loss`, `nsp_loss`) as parts,
        logged only (`loss_mlm`, `loss_nsp`)."""
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        parts = {}
        if isinstance(outputs, Mapping):
            parts = {key.removesuffix("_loss"): value.detach() for key, value in outputs.items()
                     if key.endswith("_loss") and isinstance(value, torch.Tensor)}
        return loss, outputs, parts

    def record_loss_parts(self, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self._part_sums[name] = self._part_sums.get(name, 0.0) + float(value.detach())
        self._part_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._part_count:  # averaged over ranks, as the Trainer averages `loss`
            names = list(self._part_sums)  # the same order on every rank (one code path)
            means = mean_over_ranks([self._part_sums[name] / self._part_count for name in names], self.args.device)
            for name, mean in zip(names, means):
                logs[f"loss_{name}"] = round(mean, 6)
            self._part_sums, self._part_count = {}, 0
        super().log(logs, start_time)


def _logits(outputs):
    for name in ("logits", "prediction_logits"):
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    raise ValueError("the model output has no logits")


class DistillTrainer(SpikelmTrainer):
    """Knowledge distillation into a spiking student:

        loss = alpha_ce * CE(student, labels) + alpha_kd * KL(teacher/T || student/T) * T^2
             + alpha_hidden * MSE(hidden states) + alpha_attn * attention term (`distill.attn_loss`:
               MSE of the probabilities, or KL(teacher || student) of each query's distribution)

    The teacher is a dense model on the student's device, in eval mode, under `no_grad`. The
    student's hidden states and attention maps are means over its T time steps. For masked-LM
    batches the logit term covers the masked positions only (labels != -100). Evaluation uses the
    student's own task loss.

    With `distill.hidden_match: steps` the hidden term matches every time step's state; with
    `distill.spike_drop` the student's neurons pass some inputs on unspiked over the first steps. With
    `distill.hidden_stage_steps` the first steps weigh the hidden and attention terms only (the other
    parts are still logged; a firing-rate penalty applies in both stages), at `distill.hidden_stage_lr_scale` times the learning rate; with
    `distill.hidden_stage_local` each layer then learns from its own terms only (`layer_local_gradients`). Rows of an augmented batch marked `teacher_labelled` take
    the teacher's prediction as their hard label (`teacher_labelled`).
    """

    def __init__(self, *args, teacher: torch.nn.Module, distill: DistillArgs, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.distill = distill

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The schedule of `SpikelmTrainer`, its factor times `distill.hidden_stage_lr_scale` during the
        hidden-state stage."""
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        scale, stage = self.distill.hidden_stage_lr_scale, self.distill.hidden_stage_steps
        if not created or scale == 1.0:
            return scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            raise SpikelmError(f"distill.hidden_stage_lr_scale needs a LambdaLR schedule, got {type(scheduler).__name__}",
                               hint="use train.lr_schedule linear or constant, or set hidden_stage_lr_scale to 1")

        def staged(factor):  # a plain function, which LambdaLR's state dict leaves out (a resumed run re-wraps)
            return lambda step: factor(step) * (scale if step < stage else 1.0)

        # a new LambdaLR over the same optimizer: its groups keep `initial_lr`, so the base rates hold
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(scheduler.optimizer,
                                                              [staged(f) for f in scheduler.lr_lambdas])
        return self.lr_scheduler

    def in_hidden_stage(self) -> bool:
        """Whether this step belongs to the first stage of a staged schedule (hidden terms only)."""
        return self.state.global_step < self.distill.hidden_stage_steps

    def training_step(self, model, inputs, num_items_in_batch=None):
        """`SpikelmTrainer.training_step` inside `student_forward_scope`, the backward included:
        `train.activation_checkpointing` runs each student layer again in the backward, which must see
        the forward's spike drop and layer-local detaching (torch refuses a recomputation that saves
        other tensors, and would otherwise get other activations)."""
        with self.student_forward_scope(model):
            self._student_scope_open = True
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._student_scope_open = False

    def student_forward_scope(self, model) -> ExitStack:
        """Where the student's forward runs: with layer-local gradients (`layer_local_gradients`) in the
        hidden-state stage when `distill.hidden_stage_local`, and with spike drop (`neurons.spike_drop`)
        while `distill.spike_drop_at` this step is above 0. Empty inside `training_step`, which holds
        the scope open through the backward."""
        scope = ExitStack()
        if getattr(self, "_student_scope_open", False):
            return scope
        if self.distill.hidden_stage_local and self.in_hidden_stage():
            scope.enter_context(layer_local_gradients(model))
        p = self.distill.spike_drop_at(self.state.global_step)
        if p > 0:
            scope.enter_context(spike_drop(model, p))
        return scope

    def hidden_term(self, student, teacher, attention_mask) -> torch.Tensor:
        """The hidden-state term (`losses.hidden_mse`) at the recipe's `distill.hidden_norm`."""
        return hidden_mse(student, teacher, attention_mask, relative=self.distill.hidden_norm == "relative")

    def weighed(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the loss parts; in the hidden-state stage the logit and label terms weigh 0."""
        d = self.distill
        weights = {"ce": d.alpha_ce, "kd": d.alpha_kd, "hidden": d.alpha_hidden, "attn": d.alpha_attn}
        if self.in_hidden_stage():
            weights.update(ce=0.0, kd=0.0)
        return sum(weights[name] * value for name, value in parts.items())

    def training_loss(self, model, inputs, num_items_in_batch=None):
        d = self.distill
        need_hidden, need_attn = d.alpha_hidden > 0, d.alpha_attn > 0
        flagged = inputs.pop(FLAG, None)
        teacher_inputs = {k: v for k, v in inputs.items() if k in _MODEL_INPUTS}
        self.teacher.eval()
        with torch.no_grad():
            t_out = self.teacher(**teacher_inputs, output_hidden_states=need_hidden, output_attentions=need_attn)
        t_logits = _logits(t_out)
        if flagged is not None and inputs.get("labels") is not None:
            inputs["labels"] = teacher_labelled(inputs["labels"], t_logits, flagged.bool())
        per_step = {"hidden_states_per_step": True} if need_hidden and d.hidden_match == "steps" else {}
        with self.student_forward_scope(model):
            outputs = model(**inputs, output_hidden_states=need_hidden, output_attentions=need_attn, **per_step)
        s_logits = _logits(outputs)
        mask = None
        labels = inputs.get("labels")
        if s_logits.dim() == 3 and labels is not None:  # MLM: only masked tokens
            mask = labels != -100
        parts: dict[str, torch.Tensor] = {}
        if d.alpha_ce > 0:
            parts["ce"] = outputs.loss
        if d.alpha_kd > 0:
            parts["kd"] = logit_kd(s_logits, t_logits, d.temperature, mask)
        if need_hidden:
            parts["hidden"] = self.hidden_term(outputs.hidden_states, t_out.hidden_states, inputs.get("attention_mask"))
        if need_attn:
            if d.attn_loss == "kl":
                parts["attn"] = attention_kl(outputs.attentions, t_out.attentions, inputs.get("attention_mask"))
            else:
                parts["attn"] = attention_mse(outputs.attentions, t_out.attentions)
        return self.weighed(parts), outputs, parts


def teacher_labelled(labels: torch.Tensor, teacher_logits: torch.Tensor, flagged: torch.Tensor) -> torch.Tensor:
    """`labels` with the rows marked by `flagged` (augmented copies) set to the teacher's prediction:
    its class (argmax) for classification, its value for regression (one output)."""
    if not flagged.any():
        return labels
    if teacher_logits.shape[-1] == 1:
        pred = teacher_logits.squeeze(-1)
    else:
        pred = teacher_logits.argmax(-1)
    return torch.where(flagged.to(labels.device), pred.to(labels.dtype).reshape(labels.shape), labels)


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
