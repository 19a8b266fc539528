"""The one skeleton every training run follows; the data families fill in its steps.

    run directory (lock, resume, seed) -> student (and teacher) -> data -> run_config.yaml
    -> Trainer -> calibrate on the first batch -> compile -> train -> final evaluation
    -> firing rates -> final/ -> RunResult

`Pipeline` is the interface a data family implements (`glue.GluePipeline`, `mlm.MlmPipeline`,
`seq2seq.Seq2SeqPipeline`); `run_training` and `run_evaluation` are the skeletons. Inputs are
checked (`Pipeline.preflight`) before the run directory is created, so a refused run leaves
nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..calibration import CONVERT_AMPLITUDES, calibrate, is_calibrated, spiking_neurons, text_calibration_batch
from ..checkpoints import LOCAL_HINT, LoadedModel, reinitialise, resolve_as, resolve_source
from ..errors import CheckpointError, ConfigError, DataError, SpikelmError
from ..firing import FiringReport, measure_firing, record_firing
from ..io import clean_stale_siblings, replace_dir
from ..log import get_logger
from .args import check_device
from .callbacks import CompileTimeCallback, FiringRateCallback, PrecisionRecord
from .firing_target import FiringTarget
from .precision import precision_name, resolve_bf16
from .results import EvalResult, RunResult, Timer
from .rundir import (RunDirectory, check_resume_weights, steps_of_checkpoint, warn_if_resumed_at_another_precision,
                     warn_if_resumed_at_another_scale)
from .weight_average import WeightAverageCallback

log = get_logger("training")


def preflight(command: str, model: str | None, check_data, model_fix: str | None = None,
              others: Sequence[tuple[str, str]] = (), teacher_fix: str | None = None) -> None:
    """Check that the model and the data can be had, reporting every problem at once.

    The model source must resolve (local directory, alias or reachable hub id), as must each
    (role, source) of `others` (e.g. a separate tokenizer), and the data must load (`check_data()`
    raises DataError otherwise). One problem is raised as it is; several as one error listing each
    with its fix (exit code of the first: 3 for the model, 4 for data). `teacher_fix` replaces the
    loader's generic hint (which names models of every family) for a missing teacher.
    """
    problems: list[SpikelmError] = []
    for role, source in others:
        try:
            resolve_as(source, role)
        except CheckpointError as exc:
            if role == "teacher" and teacher_fix and exc.hint == LOCAL_HINT:
                exc.hint = teacher_fix
            problems.append(exc)
    if model is not None:
        try:
            resolve_source(model)
        except CheckpointError as exc:
            if model_fix:  # the family's own fix (the loader's generic hint may name other families),
                # after the command of the recipe that makes a missing run output, unless the fix names it
                own = exc.hint == LOCAL_HINT or (exc.recipe is not None and exc.recipe in model_fix)
                exc.hint = model_fix if own else f"{exc.hint}; or {model_fix}"
            problems.append(exc)
    try:
        check_data()
    except DataError as exc:
        problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        details = []
        for p in problems:
            details.append(p.message + (f" ({'; '.join(p.details)})" if p.details else ""))
            if p.hint:
                details.append(f"fix: {p.hint}")
        raise type(problems[0])(f"{command} cannot start: {len(problems)} problems", details=details)


class Pipeline:
    """One data family's steps. Subclasses set `family` and implement the abstract methods."""

    family = ""
    model_fix: str | None = None
    """How to get a model when the recipe's is missing (shown by `preflight`)."""
    teacher_fix: str | None = None
    """The fix said for a missing teacher (None: the loader's generic one)."""

    def __init__(self, cfg, command: str, distill=None):
        self.cfg = cfg
        self.command = command
        self.distill = distill
        """The distillation settings (teacher and loss weights), or None to train on labels."""

    # -- checks before anything is written ----------------------------------------------------

    def preflight(self) -> None:
        # a twin whose initialisation is its teacher: another --model would change the student alone,
        # and the teacher would still be missing, so the teacher's fix is offered, not the family's
        teacher = self.distill.teacher if self.distill is not None else None
        twin = teacher is not None and self.cfg.model is not None and \
            Path(self.cfg.model).resolve() == Path(teacher).resolve()  # the same directory, however spelt
        others = self.other_sources()
        if teacher is not None and not twin:  # a missing teacher is said with the rest, not after the student loads
            others = [("teacher", teacher), *others]
        preflight(self.command, self.cfg.model, self.check_data, self.teacher_fix if twin else self.model_fix,
                  others=others, teacher_fix=self.teacher_fix)

    def other_sources(self) -> list[tuple[str, str]]:
        """(role, source) of the other models the run needs before it starts (a separate tokenizer)."""
        return []

    def check_data(self) -> None:
        """Raise DataError when the run's data cannot be read (cheap: a few rows)."""

    # -- the steps ----------------------------------------------------------------------------

    def load_student(self) -> LoadedModel:
        raise NotImplementedError

    def load_teacher(self, student):
        """The dense teacher (distillation) or None."""
        return None

    def load_data(self, loaded: LoadedModel) -> tuple[Any, dict[str, Any]]:
        """(training dataset, {evaluation split: dataset})."""
        raise NotImplementedError

    def collator(self, loaded: LoadedModel):
        raise NotImplementedError

    def training_arguments(self, out_dir):
        raise NotImplementedError

    def trainer(self, teacher, **kwargs):
        raise NotImplementedError

    def calibration_batch(self, train_ds, collator) -> dict[str, torch.Tensor]:
        """The training examples of `calibration_indices`, collated."""
        return collator([train_ds[i] for i in calibration_indices(len(train_ds), self.cfg.train)])

    def calibration_source(self, size: int) -> str:
        """What `calibration_batch` calibrates on, in words, for a training set of `size` examples."""
        t = self.cfg.train
        n = len(calibration_indices(size, t))
        if t.calibration_order == "random":
            source = f"{n} training examples drawn at random (seed {t.seed})"
        else:
            source = (f"the first {n} training examples" if t.calibration_examples is not None
                      else "the first training batch" if n <= t.batch_size
                      else f"the first global training batch ({n} examples, over {os.environ.get('WORLD_SIZE')} processes)")
        return (source + (", pads excluded" if t.calibration_tokens == "real" else "")
                + (", dropout on" if t.calibration_mode == "train" else ""))

    final_warnings: tuple[str, ...] | list[str] = ()
    """What makes the final scores doubtful (set by `final_evaluation`; the run summary lists them)."""

    def final_evaluation(self, trainer, evals, collator, tokenizer) -> tuple[dict, str | None, FiringReport | None]:
        """({split: metrics}, primary metric, firing report) of the trained model."""
        raise NotImplementedError

    def after_training(self, trainer, run: RunDirectory, metrics: dict) -> None:
        """Anything a family writes once training and evaluation are done."""


def record_final_metrics(trainer, run: RunDirectory, metrics: dict) -> None:
    """The final evaluation's metrics into metrics.jsonl as `final_<split>_<name>` (the families whose
    final score the Trainer's own evaluation does not log: summarisation, language modelling)."""
    run.append_metrics({"step": trainer.state.global_step, "epoch": trainer.state.epoch,
                        **{f"final_{split}_{k}": v for split, values in metrics.items() for k, v in values.items()}})


def max_length(cfg, model) -> int:
    """Tokens per example: `data.max_length`, or the model's positions when fewer and the length
    was left at its default. A length set explicitly beyond the model's positions is an error."""
    limit = model.config.max_position_embeddings
    if cfg.data.max_length <= limit:
        return cfg.data.max_length
    if "max_length" in cfg.data.model_fields_set:
        raise ConfigError(f"data.max_length is {cfg.data.max_length} but the model has {limit} positions",
                          hint=f"set -s data.max_length={limit} or less")
    return limit


def calibration_indices(size: int, train) -> list[int]:
    """Indices of the training examples that calibrate the amplitudes (`train.calibration_examples`,
    default one batch: the global one, `batch_size` times the processes of torchrun or accelerate, so
    that N processes of batch b calibrate as one of batch N*b): the first in file order, or a draw over
    all `size` examples under `train.seed` (`train.calibration_order: random`), in file order. The same
    on every rank."""
    n = min(train.calibration_examples or train.batch_size * int(os.environ.get("WORLD_SIZE", "1")), size)
    if train.calibration_order == "first":
        return list(range(n))
    generator = torch.Generator().manual_seed(train.seed)
    return sorted(torch.randperm(size, generator=generator)[:n].tolist())


#: An evaluation's firing rates cover the first this many examples of its first split (all when fewer):
#: the same examples whatever the batch size, in one extra pass that stays cheap on large dev sets
FIRING_EXAMPLES = 512


def split_firing(model, dataset, collator, batch_size: int, split: str) -> FiringReport | None:
    """The firing of `model` over the first `FIRING_EXAMPLES` examples of `dataset` (its `split`), in
    batches of `batch_size` (pads are excluded, so the batching does not change the rates); the report's
    description says which examples. None for a model without spiking neurons."""
    n = min(len(dataset), FIRING_EXAMPLES)
    batches = [collator([dataset[i] for i in range(start, min(start + batch_size, n))])
               for start in range(0, n, batch_size)]
    report = firing_of(model, batches)
    if report is not None:
        which = f"all {n:,}" if n == len(dataset) else f"the first {n:,} of {len(dataset):,}"
        report.description = f"{report.description}; over {which} {split} examples"
    return report


def _calibration_text(source: str, resumed_from: str | None) -> str:
    """What a run's amplitudes were calibrated on, in words; a resumed run's came from its checkpoint."""
    if resumed_from is None:
        return source
    return f"{source} at the run's start (this call resumed from {Path(resumed_from).name}, with its amplitudes)"


def calibrate_if_needed(model, batch: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]],
                        converted: bool, *, tokens: str = "all", mode: str = "eval") -> bool:
    """Calibrate amplitudes on `batch` (over `tokens`: see `calibration.calibrate`) when the model was
    converted here (every neuron) or holds uncalibrated neurons (those alone). `batch` may be a
    function that builds it, called only then.

    Every rank passes the same batch and `calibrate` averages across ranks, so all ranks hold
    identical amplitudes. Returns whether it calibrated amplitudes from data (False for a dense model, and
    for neurons without data-calibrated amplitudes: LIF, or alpha_mode 'fixed')."""
    neurons = spiking_neurons(model)
    if not neurons:
        return False
    if converted or not is_calibrated(model):  # a checkpoint's uncalibrated neurons alone: the others keep theirs
        calibrate(model, batch() if callable(batch) else batch, tokens=tokens, missing_only=not converted, mode=mode)
        return any(getattr(n, "alpha_mode", None) == "calibrated" for _, n in neurons)
    return False


#: `compile: auto` compiles a training run of at least this many optimizer steps: the one-off
#: compile (about a minute on 2 CPU cores) then costs less than the eager steps would
AUTO_COMPILE_MIN_STEPS = 300
#: ... and an evaluation of at least this many examples
AUTO_COMPILE_MIN_EXAMPLES = 2000


def planned_steps(args, examples: int) -> int:
    """Optimizer steps a Trainer run with `args` will take over `examples` training examples."""
    if args.max_steps > 0:
        return args.max_steps
    return epoch_steps(args, examples, args.num_train_epochs)


def epoch_steps(args, examples: int, epochs: float) -> int:
    """Optimizer steps of `epochs` passes over `examples` training examples (a last short batch counts)."""
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    return math.ceil(math.ceil(examples / per_step) * epochs)


def cap_steps_by_epochs(args, max_epochs: float | None, examples: int) -> int | None:
    """`train.max_epochs`: lower `args.max_steps` to the steps of `max_epochs` passes over `examples`
    training examples when that is fewer. Returns the new step count, or None when unchanged."""
    if max_epochs is None or args.max_steps <= 0:
        return None
    capped = epoch_steps(args, examples, max_epochs)
    if capped >= args.max_steps:
        return None
    args.max_steps = capped
    return capped


def compile_if_asked(model, mode: str, *, work: int = 0, threshold: int = AUTO_COMPILE_MIN_STEPS) -> int:
    """`compile: layers` (or `auto` with `work` at least `threshold`): run each spiking layer of
    `model` as one compiled graph (after calibration, which compiled layers leave to the eager
    path). Returns how many layers."""
    from ..models.common import CompilableLayer, compile_layers, set_compile_policy

    asked = mode
    if mode == "auto":
        compilable = any(isinstance(m, CompilableLayer) for m in model.modules())
        mode = "layers" if compilable and work >= threshold else "none"
        if compilable:
            log.info("compile: auto -> %s (%d %s; compiled from %d)", mode, work,
                     "steps to train" if threshold == AUTO_COMPILE_MIN_STEPS else "examples", threshold)
    if mode == "layers" and any(getattr(m, "impl", None) == "reference" for m in model.modules()):
        # the reference loops were asked for (SPIKELM_NEURON_IMPL=reference): compiled layers would run
        # the fast neurons instead, so they stay eager (as a model's own "auto" compile leaves them)
        log.info("compile %r: the neurons run the reference loops (SPIKELM_NEURON_IMPL=reference), so the "
                 "spiking layers stay eager", asked)
        mode = "none"
    if mode != "layers":
        set_compile_policy(model, "none")  # decided here: the layers do not compile on their own
        return 0
    n = compile_layers(model, dynamic=True)  # batches vary in length: one graph for all lengths
    if n == 0 and asked == "layers":
        log.warning("compile is 'layers' but %s has no compilable spiking layers; it runs eagerly",
                    type(model).__name__)
    elif n:
        log.info("compiling %d spiking layers: the first training and evaluation steps compile (about a "
                 "minute on CPU; torch caches the result for later runs)", n)
    return n


def training_compile_mode(train) -> str:
    """`train.compile`, except 'none' when a firing-rate target is set: its penalty reads every
    neuron's spikes through forward hooks, and a hooked layer never takes its compiled graph."""
    if train.target_firing_rate is None or train.compile == "none":
        return train.compile
    log.info("train.target_firing_rate is set: spiking layers run eagerly (train.compile %r -> 'none'), "
             "as the firing-rate penalty reads every neuron's spikes through forward hooks", train.compile)
    return "none"


def firing_of(model, batches) -> FiringReport | None:
    """The firing report of `model` over `batches`; None for a model without spiking neurons."""
    if not spiking_neurons(model):
        return None
    return measure_firing(model, batches)


def with_firing(model, run: Callable[[], Any]) -> tuple[Any, Any]:
    """(`run()`, the firing report of exactly that run): a spiking `model`'s neurons are recorded while
    it runs (so its layers run eagerly); a dense model's report is None."""
    if not spiking_neurons(model):
        return run(), None
    with record_firing(model) as report:
        result = run()
    return result, report


def check_not_empty(task: str | None, splits: dict[str, Any]) -> None:
    """DataError (exit 4) naming every split without examples, before any training or scoring."""
    empty = [name for name, ds in splits.items() if len(ds) == 0]
    if empty:
        raise DataError(f"the {task or 'text'} data has no examples in: {', '.join(empty)}",
                        hint="check the data files (and data.train_subset / data.eval_subset)")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def run_training(pipeline: Pipeline, *, resume: str | None, callbacks=None) -> RunResult:
    """Train as `pipeline` says, in its run directory; return what happened."""
    cfg = pipeline.cfg
    check_device(cfg.train.device)
    pipeline.preflight()
    with RunDirectory(cfg, pipeline.command, resume) as run:
        loaded = pipeline.load_student()
        if getattr(cfg, "model_init", "pretrained") == "random":
            log.info("model_init random: %s's architecture with fresh weights (seed %d), calibrated on them",
                     cfg.model, cfg.train.seed)
            loaded = reinitialise(loaded, cfg.train.seed)
        if run.resume_from is not None:
            check_resume_weights(run.resume_from, loaded.model)
        teacher = pipeline.load_teacher(loaded.model)
        train_ds, evals = pipeline.load_data(loaded)
        check_not_empty(cfg.task, {"train": train_ds, **evals})
        collator = pipeline.collator(loaded)
        args = pipeline.training_arguments(run.out_dir)
        if run.resume_from is not None:
            warn_if_resumed_at_another_scale(run.resume_from, args)
            warn_if_resumed_at_another_precision(run.resume_from, precision_name(args.bf16, args.fp16))
        capped = cap_steps_by_epochs(args, cfg.train.max_epochs, len(train_ds))
        if capped is not None:
            log.info("max_epochs %g: %d steps (%g passes over %d training examples) instead of max_steps %d",
                     cfg.train.max_epochs, capped, cfg.train.max_epochs, len(train_ds), cfg.train.max_steps)
        run.write_config()
        firing = FiringRateCallback()
        trainer = pipeline.trainer(
            teacher,
            model=loaded.model,
            args=args,
            train_dataset=train_ds,
            data_collator=collator,
            processing_class=loaded.tokenizer,
            callbacks=[firing, run.metrics_callback(), PrecisionRecord(precision_name(args.bf16, args.fp16)),
                       *(callbacks or [])],
            firing_target=FiringTarget.from_train_args(cfg.train),
        )
        if cfg.train.weight_average is not None:
            trainer.add_callback(WeightAverageCallback(trainer, cfg.train.weight_average))
        key, value = CONVERT_AMPLITUDES
        from_convert = getattr(trainer.model.config, key, None) == value
        if from_convert:  # amplitudes of the calibration text, not of this task (method doc, gotcha 3)
            log.info("'%s' holds the amplitudes spikelm convert calibrated on its calibration text: they are "
                     "calibrated again on this run's data", cfg.model)
            delattr(trainer.model.config, key)
        calibrated = calibrate_if_needed(trainer.model, pipeline.calibration_batch(train_ds, collator),
                                         loaded.converted or from_convert, tokens=cfg.train.calibration_tokens,
                                         mode=cfg.train.calibration_mode)
        steps = planned_steps(args, len(train_ds))
        stage = int(getattr(pipeline.distill, "hidden_stage_steps", 0) or 0)
        joins = max(float(getattr(pipeline.distill, "alpha_kd", 0) or 0), float(getattr(pipeline.distill, "alpha_ce", 0) or 0))
        if stage and stage >= steps and joins > 0 and trainer.is_world_process_zero():  # they would never join
            log.warning("distill.hidden_stage_steps %d covers the whole run of %d steps: every step matches hidden "
                        "states alone (alpha_ce and alpha_kd never join, the rate stays scaled by "
                        "hidden_stage_lr_scale); use a stage shorter than the run", stage, steps)
        start_step = steps_of_checkpoint(run.resume_from) or 0
        # `auto` weighs the compile against the steps this call will take: a resumed run's, not the whole run's
        if compile_if_asked(trainer.model, training_compile_mode(cfg.train), work=max(0, steps - start_step)):
            trainer.add_callback(CompileTimeCallback())
        if run.resume_from is not None and start_step >= steps:
            log.info("%s is the run's last step (%d): no step left to train, the run ends as it did",
                     Path(run.resume_from).name, start_step)
        trainer.resumed_from = run.resume_from  # callbacks read the checkpoint's own files (weight average)
        train_out = trainer.train(resume_from_checkpoint=run.resume_from)
        metrics, primary, report = pipeline.final_evaluation(trainer, evals, collator, loaded.tokenizer)
        # final/ appears whole or not at all: written beside it, then renamed into place
        staging = run.out_dir / f".{run.final_dir.name}.partial"
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        if trainer.is_world_process_zero():
            clean_stale_siblings(run.final_dir)  # an old final/ a kill set aside, where renames cannot exchange
        try:
            trainer.save_model(str(staging))  # every rank calls it; only the main process writes
            if trainer.is_world_process_zero():
                loaded.tokenizer.save_pretrained(str(staging))
                # the Trainer's pickled arguments: run_config.yaml is the record, and final/ stays pickle-free
                (staging / "training_args.bin").unlink(missing_ok=True)
                replace_dir(staging, run.final_dir)
        except BaseException:  # a full disk, Ctrl-C: the part written goes (the checkpoints stay)
            if trainer.is_world_process_zero():
                shutil.rmtree(staging, ignore_errors=True)
            raise
        trainer.accelerator.wait_for_everyone()  # final/ in place before any rank reads it (a sweep's next point)
        pipeline.after_training(trainer, run, metrics)
        return RunResult(
            command=pipeline.command,
            out_dir=str(run.out_dir),
            final_dir=str(run.final_dir),
            task=cfg.task,
            global_step=trainer.state.global_step,
            epochs=float(trainer.state.epoch or 0.0),
            # None when a resumed run had no step left to take (its loss is the earlier run's)
            train_loss=_finite(train_out.training_loss) if trainer.state.global_step > start_step else None,
            metrics=metrics,
            primary_metric=primary,
            best_checkpoint=trainer.state.best_model_checkpoint,
            resumed_from=run.resume_from,
            resumed_at_step=start_step if run.resume_from is not None else None,
            calibrated=calibrated,
            calibration=_calibration_text(pipeline.calibration_source(len(train_ds)), run.resume_from) if calibrated
            else None,
            firing_rate=report.mean_rate if report else None,
            firing_rate_mean=report.description if report else None,
            layer_firing_rates=report.layer_rates() if report else {},
            target_firing_rate=cfg.train.target_firing_rate,
            warnings=[*firing.warnings, *pipeline.final_warnings],
            samples_per_second=train_out.metrics.get("train_samples_per_second"),
            seconds=run.timer.seconds,
            precision=precision_name(args.bf16, args.fp16),
        )


class Evaluation:
    """One data family's evaluation steps (`glue.GlueEvaluation`, `seq2seq.Seq2SeqEvaluation`,
    `causal_lm.CausalLmEvaluation`)."""

    model_fix: str | None = None
    compiles: bool = True
    """Whether `compile` applies (False: the family records firing on every forward, which runs
    spiking layers eagerly anyway)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def check_data(self) -> None:
        """Raise DataError when the evaluation data cannot be read (cheap: a few rows)."""

    def warnings(self, loaded: LoadedModel) -> list[str]:
        """What makes the scores of this model doubtful (an untrained head, another task's labels)."""
        return []

    def load(self) -> LoadedModel:
        raise NotImplementedError

    def load_data(self, loaded: LoadedModel) -> dict[str, Any]:
        raise NotImplementedError

    def calibration_batch(self, loaded: LoadedModel, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        """What a model converted here (or saved uncalibrated) calibrates on: the calibration text, as
        `spikelm convert` calibrates, never the scored examples; so a dense model scores as its
        converted twin does, whatever the batch size."""
        return text_calibration_batch(loaded.tokenizer, causal=False,
                                      max_positions=loaded.model.config.max_position_embeddings)

    def score(self, loaded: LoadedModel, data: dict[str, Any]) -> tuple[dict, dict, str, FiringReport | None]:
        """({split: metrics}, {split: examples}, primary metric, firing report)."""
        raise NotImplementedError

    def result_fields(self) -> dict[str, Any]:
        """Family-specific `EvalResult` fields, once `score` has run (perplexity, tokens, ...)."""
        return {}


#: The files an evaluation writes into its `out_dir`.
EVAL_OUTPUTS = ("eval_results.json", "eval_config.yaml")


def check_eval_out_dir(out_dir: str | Path | None) -> None:
    """Refuse an evaluation `out_dir` that is a file or cannot be written (before any work)."""
    from ..io import check_output_location

    if not out_dir:
        return
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out-dir '{out}' is a file", hint="choose a directory for eval_results.json")
    check_output_location(out)


def _averaged_checkpoint_warning(model) -> list[str]:
    """A checkpoint of a `train.weight_average` run is scored with its raw weights: the run's own
    evaluations (and its final/) used the average saved beside them."""
    from .weight_average import FILE

    if model is None or not (Path(model) / FILE).is_file():
        return []
    return [f"'{model}' is a checkpoint of a run that averages its weights (train.weight_average): these scores are "
            f"of its raw weights, while the run's evaluations scored the average beside them ({FILE}); its final/ "
            "holds the average"]


def run_evaluation(evaluation: Evaluation, *, firing_picture: dict[str, str] | None = None) -> EvalResult:
    """Score a model as `evaluation` says; write eval_results.json (and eval_config.yaml) to
    `out_dir` when one is given. Never writes run_config.yaml, so evaluating into a training run's
    directory leaves that run replayable. `firing_picture`: where `eval --plot-firing` put its
    picture, recorded in the result."""
    from ..config import save_config
    from ..io import atomic_write_text
    from .rundir import seed_everything

    cfg = evaluation.cfg
    timer = Timer()
    check_device(cfg.device, "device")
    check_eval_out_dir(cfg.out_dir)
    seed_everything(cfg.seed)
    preflight("eval", cfg.model, evaluation.check_data, evaluation.model_fix)
    loaded = evaluation.load()
    data = evaluation.load_data(loaded)
    check_not_empty(cfg.task, data)
    calibrate_if_needed(loaded.model, lambda: evaluation.calibration_batch(loaded, data), loaded.converted)
    if evaluation.compiles:
        compile_if_asked(loaded.model, cfg.compile, work=sum(len(ds) for ds in data.values()),
                         threshold=AUTO_COMPILE_MIN_EXAMPLES)
    elif cfg.compile == "layers":
        log.info("compile is 'layers', but %s records the firing of every forward: its spiking layers run eagerly",
                 cfg.task)
    device = next(loaded.model.parameters()).device.type
    bf16 = resolve_bf16(cfg.bf16, device, "eval")
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):  # eval's bf16
        metrics, examples, primary, report = evaluation.score(loaded, data)
    warnings = [*evaluation.warnings(loaded), *_averaged_checkpoint_warning(cfg.model)]
    for message in warnings:
        log.warning(message)
    result = EvalResult(
        model=str(cfg.model), task=cfg.task, metrics=metrics, examples=examples, primary_metric=primary,
        firing_rate=report.mean_rate if report else None,
        firing_rate_mean=report.description if report else None,
        layer_firing_rates=report.layer_rates() if report else {},
        converted=loaded.converted, warnings=warnings, seconds=timer.seconds, precision=precision_name(bf16),
        firing_picture=firing_picture, **evaluation.result_fields(),
    )
    from .rundir import is_main_process

    if cfg.out_dir and is_main_process():  # under torchrun (a sweep's reference) every rank scores; one writes
        out_dir = Path(cfg.out_dir)
        results = out_dir / "eval_results.json"
        earlier = _earlier_eval(results)
        save_config(cfg, out_dir / "eval_config.yaml", header="Resolved config of a `spikelm eval` run")
        atomic_write_text(results, json.dumps(result.to_dict(), indent=2) + "\n")
        if earlier is not None and earlier != (result.model, result.task):
            log.warning("%s held the results of %s on %s; it now holds these (give each evaluation its own "
                        "--out-dir to keep both)", results, *earlier)
        log.info("wrote %s", results)
    return result


def _earlier_eval(path: Path) -> tuple[Any, Any] | None:
    """(model, task) of the eval_results.json at `path`, None when there is none (or it is unreadable)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (earlier.get("model"), earlier.get("task")) if isinstance(earlier, dict) else None
