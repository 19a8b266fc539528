"""The masked-LM family: pretraining (MLM, optionally + next-sentence prediction) of a spiking BERT on
local text, from scratch (the paper) or from a checkpoint, optionally distilled from a dense MLM
teacher (`pretrain` with a `distill` section, or `distill` without a task); and `eval` of such a model
on a language-modelling task's text (`MaskedLmEvaluation`: held-out masked-token scores).

The released schedule (method doc 7.1): AdamW lr 2e-4, weight decay 0, linear schedule with 5k warmup
over a 500k-step horizon, stopped at 100k steps, batch 512 (64 x 8 GPUs), length 128, mask
probability 0.15. The horizon is `train.schedule_steps`, implemented by `SpikelmTrainer.create_scheduler`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling

from ..calibration import spiking_neurons
from ..checkpoints import (MODEL_TYPES, LoadedModel, check_config_fields, instantiate, load_model, load_teacher, load_tokenizer,
                           read_config, resolve_as, resolve_source)
from ..data.lm import has_split_layout, load_lm_text, local_text_path
from ..data.text import EXAMPLE_INDEX, corpus_files, mlm_dataset
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation.masked_lm import HELD_OUT_MASK_SEED, NOTHING_MASKED, any_masked, score_masked_lm
from ..log import get_logger
from ..models.spiking_bert import SpikingBertConfig, SpikingBertForMaskedLM, SpikingBertForPreTraining
from .args import training_arguments
from .causal_lm import device_of
from .pipeline import (Evaluation, Pipeline, calibration_indices, firing_of, max_length, record_final_metrics,
                       with_firing)
from .rundir import local_main_process_first
from .trainers import DistillTrainer, SpikelmTrainer

FAMILIES = ("bert",)
PRIMARY = "mlm_accuracy"
"""The held-out score a masked-LM run reports first (data.validation_file)."""
log = get_logger("mlm")


@contextlib.contextmanager
def _held_out_named():
    """A DataError of the held-out text ("the text corpus ... is empty") says which text it is."""
    try:
        yield
    except DataError as exc:
        exc.message = f"held-out text (data.validation_file, --held-out): {exc.message}"
        raise


@dataclass
class SeededMaskingCollator(DataCollatorForLanguageModeling):
    """transformers' `DataCollatorForLanguageModeling` (15% of real tokens, 80/10/10, special tokens
    never), with each example's masks drawn over its own tokens from its own generator, seeded by
    (`mask_seed`, `epoch`, the example's `EXAMPLE_INDEX`): a pure function of the example and the
    epoch, never of the global random state, the batch the example lands in or its padding (right
    padding, as BERT tokenizers pad, or left where the tokenizer's padding_side says so). So a run
    resumed from a checkpoint masks every later batch as the uninterrupted run did (the global state
    is saved after the data loader has already collated, and masked, the next batch). `set_epoch`
    (called by `SpikelmTrainer` at each epoch) gives each epoch fresh masks. Examples without an
    index (none of spikelm's) are masked from the global random state, as transformers masks them.
    A module-level class, so data-loader workers started by spawn or forkserver can pickle it."""

    mask_seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def torch_call(self, examples):
        examples = [dict(e) for e in examples]
        self._rows = [(e.pop(EXAMPLE_INDEX, None), len(e["input_ids"])) for e in examples]
        return super().torch_call(examples)

    def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
        rows, self._rows = getattr(self, "_rows", []), []
        if len(rows) != inputs.shape[0] or any(index is None for index, _ in rows):
            self.generator = None
            return super().torch_mask_tokens(inputs, special_tokens_mask, offset_mapping)
        inputs, labels = inputs.clone(), torch.full_like(inputs, -100)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"  # a tokenizer may pad on the left
        for r, (index, n) in enumerate(rows):
            key = ((self.mask_seed * 1_000_003 + self.epoch) * 1_000_003 + int(index)) % 2**63
            self.generator = torch.Generator().manual_seed(key)
            own = slice(inputs.shape[1] - n, inputs.shape[1]) if left else slice(0, n)
            row = inputs[r:r + 1, own]  # the example's own tokens: its masks never see the batch's padding
            special = torch.tensor([self.tokenizer.get_special_tokens_mask(row[0].tolist(),
                                                                           already_has_special_tokens=True)])
            inputs[r:r + 1, own], labels[r:r + 1, own] = super().torch_mask_tokens(row.clone(), special)
        self.generator = None
        return inputs, labels


def seeded_masking_collator(tokenizer, mlm_probability: float, seed: int) -> SeededMaskingCollator:
    """The masked-LM collator of a run: `SeededMaskingCollator` seeded by the run's seed."""
    return SeededMaskingCollator(tokenizer, mlm=True, mlm_probability=mlm_probability, mask_seed=seed)


def scratch_model(cfg, nsp: bool, tokenizer):
    """A randomly initialised spiking BERT sized by `cfg.model_config` and the tokenizer."""
    head_cls = SpikingBertForPreTraining if nsp else SpikingBertForMaskedLM
    fields = dict(cfg.model_overrides)
    check_config_fields(SpikingBertConfig, fields)
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise ConfigError(f"model_config.vocab_size ({fields['vocab_size']}) is smaller than the tokenizer's "
                          f"vocabulary ({len(tokenizer)})")
    fields["pad_token_id"] = tokenizer.pad_token_id or 0
    fields.update(cfg.neuron.model_fields_dict())
    try:
        config = SpikingBertConfig(**fields)
    except Exception as exc:  # transformers' strict validation raises its own error types
        raise ConfigError(f"invalid model_config: {exc}") from None
    if config.num_hidden_layers < 1:
        raise ConfigError(f"invalid model_config: num_hidden_layers is {config.num_hidden_layers}",
                          hint="a model needs at least one layer")
    config.architectures = [head_cls.__name__]
    return instantiate(head_cls, config, "model_config")


class MlmPipeline(Pipeline):
    """pretrain, and distill on a text corpus."""

    family = "mlm"
    model_fix = "pass --model minilm or a BERT directory, or set model: null to pretrain from scratch"

    def __init__(self, cfg, command: str, distill=None):
        super().__init__(cfg, command, distill)
        self.nsp = bool(cfg.mlm.nsp)
        self.head = "pretraining" if self.nsp else "masked_lm"

    def check_data(self) -> None:
        source, held_out = Path(self.cfg.data.source), self.cfg.data.validation_file
        missing = [f"text source '{source}' (data.source)"] if not source.exists() else []
        if held_out is not None and not Path(held_out).exists():
            missing.append(f"held-out text '{held_out}' (data.validation_file)")
        if len(missing) == 1:
            raise DataError(f"{missing[0]} does not exist",
                            hint="give a UTF-8 text file or a directory of .txt files"
                            + (", or drop data.validation_file" if held_out is not None and "held-out" in missing[0] else ""))
        if missing:
            raise DataError("the text files do not exist", details=missing,
                            hint="give UTF-8 text files or directories of .txt files")

    def other_sources(self) -> list[tuple[str, str]]:
        tokenizer = getattr(self.cfg, "tokenizer", None)  # from scratch (model: null), the run's only model source
        return [("tokenizer", tokenizer)] if tokenizer is not None else []

    def _tokenizer_override(self):
        source = getattr(self.cfg, "tokenizer", None)
        return None if source is None else load_tokenizer(resolve_as(source, "tokenizer"))

    def load_student(self) -> LoadedModel:
        cfg = self.cfg
        if cfg.model is None:
            tokenizer = self._tokenizer_override()
            if tokenizer is None:
                raise ConfigError("tokenizer is required when pretraining from scratch (model: null)",
                                  hint="set tokenizer: minilm (30522-token uncased WordPiece) or a tokenizer directory")
            model = scratch_model(cfg, self.nsp, tokenizer)
            loaded = LoadedModel(model=model, tokenizer=tokenizer, model_dir=None, family="bert", converted=True,
                                 config=model.config.to_dict())
        else:
            loaded = load_model(cfg.model, head=self.head, neuron=cfg.neuron,
                                config_overrides=cfg.model_overrides, families=FAMILIES,
                                role="student" if self.distill else "model", reconvert=getattr(cfg, "reconvert", False))
            fresh = [k for k in (loaded.weights.newly_initialised if loaded.weights else []) if k.startswith("cls.")]
            if fresh:  # e.g. minilm: an encoder without pretraining heads
                log.info("%s untrained ('%s' has no weights for %s: %s%s): expect a first masked-LM loss near "
                         "ln(vocabulary size) or above", "the masked-LM and NSP heads start" if self.nsp else
                         "the masked-LM head starts", cfg.model, "them" if self.nsp else "it", ", ".join(fresh[:3]),
                         ", ..." if len(fresh) > 3 else "")
            tokenizer = self._tokenizer_override()
            if tokenizer is not None:
                loaded.tokenizer = tokenizer
            if len(loaded.tokenizer) > loaded.model.config.vocab_size:
                raise CheckpointError(f"the tokenizer has {len(loaded.tokenizer)} tokens, the model "
                                      f"{loaded.model.config.vocab_size}")
        self.max_length = max_length(cfg, loaded.model)
        return loaded

    def load_teacher(self, student):
        if self.distill is None:
            return None
        return load_teacher(self.distill.teacher, "masked_lm", student=student, distill=self.distill,
                            num_labels=None, families=FAMILIES, positions=self.max_length)

    def load_data(self, loaded: LoadedModel):
        cfg = self.cfg
        self.tokenizer = loaded.tokenizer
        if cfg.data.validation_file is not None:  # a held-out text that cannot serve: said before the corpus is tokenised
            with _held_out_named():
                held_files = corpus_files(cfg.data.validation_file)
            shared = sorted(set(held_files) & set(corpus_files(cfg.data.source)))
            if shared:  # its scores are then those of text the model trained on, not of held-out text
                log.warning("the held-out text (data.validation_file, --held-out) is also training text (data.source, "
                            "--text): %s%s; its scores after training are not held-out scores (give held-out text "
                            "outside the training text, e.g. --text .../valid.txt --held-out .../test.txt)",
                            ", ".join(shared[:3]), f" and {len(shared) - 3} more" if len(shared) > 3 else "")
        with local_main_process_first():  # one rank per node tokenises into the cache, the others read it back
            train = mlm_dataset(cfg.data.source, loaded.tokenizer, self.max_length, nsp=self.nsp,
                                subset=cfg.data.train_subset, seed=cfg.train.seed)
        if len(train) < cfg.train.batch_size:
            log.warning("the text gives %d sequence(s) of up to %d tokens, fewer than one batch of %d: every step sees the "
                        "same text", len(train), self.max_length, cfg.train.batch_size)
        if cfg.data.validation_file is None:
            if cfg.data.eval_subset is not None:  # e.g. a GLUE recipe pointed at a text corpus
                log.info("data.eval_subset %d limits held-out text, and none is given (data.validation_file): "
                         "nothing is scored after training", cfg.data.eval_subset)
            return train, {}
        with local_main_process_first():  # the pairs of NSP and the masks: the same for every run (seed fixed)
            with _held_out_named():
                held_out = mlm_dataset(cfg.data.validation_file, loaded.tokenizer, self.max_length, nsp=self.nsp,
                                       subset=cfg.data.eval_subset, seed=HELD_OUT_MASK_SEED)
        masks = seeded_masking_collator(loaded.tokenizer, cfg.mlm.mlm_probability, HELD_OUT_MASK_SEED)
        if not any_masked(held_out, masks):  # now, not after training: the masks do not depend on the model
            raise DataError(f"held-out text '{cfg.data.validation_file}': {NOTHING_MASKED}",
                            hint="give more held-out text, or drop it (-s data.validation_file=null)")
        return train, {"validation": held_out}

    def collator(self, loaded: LoadedModel):
        return seeded_masking_collator(loaded.tokenizer, self.cfg.mlm.mlm_probability, self.cfg.train.seed)

    def training_arguments(self, out_dir):
        labels = ("labels", "next_sentence_label") if self.nsp else ("labels",)
        return training_arguments(self.cfg.train, out_dir, label_names=labels, evaluate=False)

    def trainer(self, teacher, **kwargs):
        kwargs["schedule_steps"] = self.cfg.train.schedule_steps
        if teacher is None:
            return SpikelmTrainer(**kwargs)
        return DistillTrainer(**kwargs, teacher=teacher, distill=self.distill)

    def calibration_batch(self, train_ds, collator):
        """The sequences of `calibration_indices` without masking (calibration sees real text)."""
        rows = [{k: train_ds[i][k] for k in ("input_ids", "token_type_ids", "attention_mask")}
                for i in calibration_indices(len(train_ds), self.cfg.train)]
        self._calib = self.tokenizer.pad(rows, return_tensors="pt")
        return self._calib

    def final_evaluation(self, trainer, evals, collator, tokenizer):
        """Without held-out text, the firing over the calibration rows; with it, the masked tokens'
        loss, accuracy and perplexity (+ NSP accuracy), and the firing over that text."""
        if "validation" not in evals:
            report = firing_of(trainer.model, [self._calib])
            if report is not None:  # say which text, as the held-out and eval reports do
                report.description = (f"{report.description}; over the {len(self._calib['input_ids']):,} "
                                      "calibration sequences (unmasked training text; no held-out text given)")
            return {}, None, report
        held_out = evals["validation"]
        masks = seeded_masking_collator(tokenizer, self.cfg.mlm.mlm_probability, HELD_OUT_MASK_SEED)
        model = trainer.model
        try:
            score, report = with_firing(model, lambda: score_masked_lm(
                model, held_out, masks, batch_size=self.cfg.train.eval_batch_size))
        except ValueError as exc:
            raise DataError(f"held-out text '{self.cfg.data.validation_file}': {exc}",
                            hint="give more held-out text, or drop it (-s data.validation_file=null)") from None
        if report is not None:
            report.description = f"{report.description}; over the {len(held_out):,} held-out sequences"
        return {"validation": score.metrics()}, PRIMARY, report

    def after_training(self, trainer, run, metrics):
        if metrics:
            record_final_metrics(trainer, run, metrics)


class MaskedLmEvaluation(Evaluation):
    """eval of a masked LM (a BERT-family model, e.g. a `pretrain` run's final/) on a language-modelling
    task's text (`--task wikitext2`, or any text file with `--data-dir`): the masked tokens' loss,
    accuracy and perplexity per split (+ NSP accuracy with `mlm.nsp`), masked exactly as a pretraining
    run masks its held-out text (`HELD_OUT_MASK_SEED`, `mlm.mlm_probability`), in sequences of
    `data.max_length` tokens built as training builds them (`data.text.mlm_dataset`), at most
    `data.eval_subset` of them; so `spikelm eval <run>/final --task wikitext2 --data-dir <its held-out
    file>` repeats the run's own held-out scores. The firing is that of exactly the scored sequences."""

    model_fix = "give a BERT masked LM (a spikelm pretrain run's final/), or a causal LM (smollm2) for perplexity"
    compiles = False  # the firing of every sequence is recorded: hooked layers run eagerly

    _CAUSAL_ONLY = (("seq_len", "--seq-len (data.seq_len)"), ("stride", "--stride (data.stride)"),
                    ("max_tokens", "--max-tokens (data.max_tokens)"))

    @staticmethod
    def takes(model: str | None) -> bool:
        """Whether `model` is a BERT-family checkpoint (False when it cannot be read: the evaluation it
        falls back to reports that with the data's problems)."""
        if model is None:
            return False
        try:
            return MODEL_TYPES[read_config(resolve_source(model))["model_type"]].name in FAMILIES
        except (CheckpointError, KeyError):
            return False

    def __init__(self, cfg, progress=None):
        super().__init__(cfg)
        self.progress = progress
        given = [flag for name, flag in self._CAUSAL_ONLY if name in cfg.data.model_fields_set]
        given += ["--dense (dense_reference)"] if cfg.dense_reference is not None else []
        if given:
            raise ConfigError(f"{', '.join(given)}: for a causal LM's perplexity; '{cfg.model}' is a masked LM, "
                              "scored on its masked tokens in sequences of data.max_length tokens",
                              hint="drop them; -s data.max_length=N sets the sequence length, -s data.eval_subset=N "
                              "the number of sequences")
        self.split_names = list(cfg.splits) or ["test"]
        self.nsp = bool(cfg.mlm.nsp)
        self.max_length = cfg.data.max_length

    @cached_property
    def _text_folder(self) -> Path | None:
        """`--data-dir` (or data.source) when it is a folder to score as one corpus, every .txt file in
        it, as `pretrain --held-out` reads a folder: the held-out folder of the run the model comes
        from (whatever its layout), or a folder with no split laid out (no wikitext-2/<split>.txt, ...).
        None otherwise: the split's own file (`local_text_path`), or the hub."""
        from .rundir import held_out_of_run

        d = self.cfg.data
        where = d.data_dir if d.data_dir is not None else d.source
        if where is None or not Path(where).expanduser().is_dir():
            return None
        folder = Path(where).expanduser()
        held_out = held_out_of_run(self.cfg.model)
        if held_out is not None and held_out.resolve() == folder.resolve():
            log.info("%s is the folder the model's run held out: every .txt file in it is scored, as the run "
                     "scored them", folder)
            return folder
        if has_split_layout(folder, self.cfg.task) or not any(folder.rglob("*.txt")):
            return None
        return folder

    def check_data(self) -> None:
        if self._text_folder is not None:
            return
        d = self.cfg.data
        load_lm_text(self.cfg.task, self.split_names[0], source=d.source, data_dir=d.data_dir)

    def load(self) -> LoadedModel:
        cfg = self.cfg
        loaded = load_model(cfg.model, head="pretraining" if self.nsp else "masked_lm", neuron=cfg.neuron,
                            families=FAMILIES, reconvert=cfg.reconvert)
        fresh = [k for k in (loaded.weights.newly_initialised if loaded.weights else []) if k.startswith("cls.")]
        if self.nsp and any(k.startswith("cls.seq_relationship") for k in fresh):
            raise ConfigError(f"mlm.nsp: '{cfg.model}' has no next-sentence head to score",
                              hint="drop -s mlm.nsp=true (the masked tokens are scored without it)")
        if fresh:  # as a causal LM without its LM head: the scores would be a random head's
            raise CheckpointError(f"'{cfg.model}' has no masked-LM head (no weights for {', '.join(fresh[:3])}"
                                  f"{', ...' if len(fresh) > 3 else ''}): its masked-token scores would come from a "
                                  "randomly initialised head",
                                  hint="score a pretrained masked LM (a spikelm pretrain run's final/, or a "
                                  "BertForMaskedLM / BertForPreTraining checkpoint)")
        self.max_length = max_length(cfg, loaded.model)
        loaded.model.to(device_of(cfg))
        return loaded

    def load_data(self, loaded: LoadedModel) -> dict[str, Any]:
        d = self.cfg.data
        out = {}
        folder = self._text_folder
        for split in self.split_names:
            path = folder or local_text_path(self.cfg.task, split, source=d.source, data_dir=d.data_dir)
            if path is None:  # the hub's text: mlm_dataset reads files, so it is kept as one in the datasets
                # cache, at a fixed path, so the next eval reads its tokenisation back
                import datasets

                from ..io import atomic_write_text

                text, _ = load_lm_text(self.cfg.task, split, source=d.source, data_dir=d.data_dir)
                path = Path(datasets.config.HF_DATASETS_CACHE) / "spikelm-text" / f"{self.cfg.task}-{split}.txt"
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path, text)
            out[split] = mlm_dataset(path, loaded.tokenizer, self.max_length, nsp=self.nsp,
                                     subset=d.eval_subset, seed=HELD_OUT_MASK_SEED)
        return out

    def score(self, loaded, data):
        model, cfg = loaded.model, self.cfg
        masks = seeded_masking_collator(loaded.tokenizer, cfg.mlm.mlm_probability, HELD_OUT_MASK_SEED)
        kind = "spiking" if spiking_neurons(model) else "dense"

        def progress_of(split):
            if self.progress is None:
                return None
            return lambda done, total, read, seconds: self.progress(f"{split}, {kind}", done, total, read, seconds,
                                                                    unit="sequences")

        try:
            scores, report = with_firing(model, lambda: {
                split: score_masked_lm(model, ds, masks, batch_size=cfg.batch_size, progress=progress_of(split))
                for split, ds in data.items()})
        except ValueError as exc:
            raise DataError(f"the {cfg.task} text: {exc}", hint="give more text, or a larger data.eval_subset") from None
        if report is not None:
            sequences = sum(len(ds) for ds in data.values())
            report.description = f"{report.description}; over the {sequences:,} scored sequences"
        return ({split: score.metrics() for split, score in scores.items()},
                {split: len(ds) for split, ds in data.items()}, PRIMARY, report)
