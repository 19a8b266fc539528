"""`spikelm eval`: dev metrics (GLUE), ROUGE (xsum, cnn_dm), perplexity or masked-token scores (wikitext2)
and firing rates of a checkpoint; with `--prompt`, a causal LM's continuation of a prompt (eval's generation mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import EvalConfig

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import PrintConfigOpt, load_run_config, print_config_and_exit

EvalTaskOpt = Annotated[Optional[str], typer.Option("--task", help="Benchmark task to score the model on: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte), xsum, cnn_dm, or wikitext2 (a causal LM's perplexity; a BERT masked LM's masked-token loss and accuracy, masked as pretraining masks held-out text).")]
EvalOverridesOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override an eval setting: -s batch_size=64, -s data.eval_subset=200, -s neuron.kind=dense (repeatable).")]


@friendly_errors
def eval_command(
    source: Annotated[Optional[str], typer.Argument(metavar="MODEL", show_default=False, help="Checkpoint directory (e.g. runs/sst2/final), alias, or an eval recipe (.yaml).")] = None,
    task: EvalTaskOpt = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="The model to score, as MODEL (give one): a checkpoint directory, an alias (minilm, "
        "bart-base, smollm2, ...) or a hub id; a dense model is converted with the neuron settings and calibrated, "
        "unless -s neuron.kind=dense (a dense training run's model is scored dense). Beats an eval recipe's model.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Local data: a GLUE root (SST-2/, MNLI/, ...) or task folder; for xsum/cnn_dm a folder "
        "with validation.jsonl; for wikitext2 a folder with wikitext-2/<split>.txt or any text file (a masked "
        "LM: also a folder of .txt files, read whole). Beats an eval recipe's data.source.")] = None,
    overrides: EvalOverridesOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Where eval_results.json (with --prompt: generation_results.json) and eval_config.yaml go (a training run's directory is fine: its run_config.yaml is left alone).")] = None,
    print_config: PrintConfigOpt = False,
    format: FormatOpt = OutputFormat.table,
    plot_firing: Annotated[Optional[Path], typer.Option(
        "--plot-firing", help="Also draw the firing rate per token (columns) and layer (rows) of one input as this PNG, "
        "with its data as JSON beside it (same name, .json); dead layers are hatched. The input is the first dev "
        "example, or --firing-example / --firing-text. See docs/firing-pictures.md. Example: --plot-firing firing.png "
        "--firing-text 'a gripping , funny film'.")] = None,
    firing_text: Annotated[Optional[str], typer.Option(
        "--firing-text", help="A sentence for --plot-firing to picture instead of a dev example (one segment; "
        "BART: encoder only).")] = None,
    firing_example: Annotated[Optional[int], typer.Option(
        "--firing-example", help="Index of the example --plot-firing pictures, in the first split scored (default "
        "0; BART: the decoder is teacher-forced with its reference summary; wikitext2: a window).")] = None,
    seq_len: Annotated[Optional[int], typer.Option(
        "--seq-len", help="wikitext2: positions per window, BOS included (default 256, or the model's context when "
        "smaller; above the context: exit 2). data.seq_len.")] = None,
    stride: Annotated[Optional[int], typer.Option(
        "--stride", help="wikitext2: text tokens between window starts (default seq_len - 1: non-overlapping, every "
        "token scored once; smaller: sliding windows scoring only new tokens). data.stride.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(
        "--max-tokens", help="wikitext2: score only the first N tokens of the text (quick runs). data.max_tokens.")] = None,
    dense: Annotated[Optional[str], typer.Option(
        "--dense", help="The dense model a spiking checkpoint is compared with (dense_perplexity; --compare-dense). "
        "A dense model converted here is compared with itself without it. dense_reference.")] = None,
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", help="Generation mode: continue this text with a causal LM (KV cache) and show tokens/s, "
        "instead of scoring a task. prompt.text.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", help="--prompt: most tokens generated (default 32).")] = None,
    chat: Annotated[bool, typer.Option(
        "--chat", help="--prompt: wrap the prompt in the tokenizer's chat template as one user turn.")] = False,
    greedy: Annotated[bool, typer.Option("--greedy", help="--prompt: greedy decoding (the default).")] = False,
    temperature: Annotated[Optional[float], typer.Option(
        "--temperature", help="--prompt: sample at this temperature (from --seed).")] = None,
    top_p: Annotated[Optional[float], typer.Option(
        "--top-p", help="--prompt: sample from the smallest token set holding this probability (from --seed).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (sampling with --prompt). seed.")] = None,
    compare_dense: Annotated[bool, typer.Option(
        "--compare-dense", help="--prompt: also continue the prompt with the dense model (the model before "
        "conversion, or --dense), from the same seed.")] = False,
) -> None:
    """Evaluate a checkpoint: GLUE dev metrics, beam-search ROUGE for xsum/cnn_dm, or on wikitext2 a causal \
LM's perplexity (dense and spiking on the same windows) or a masked LM's masked-token scores; per-layer \
firing rates. With --prompt: generate text.

    Example: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --format json
    (a training run's model is scored with that run's input lengths and
    generation settings, unless set here; without --task, on the run's own
    task and data)

    Perplexity: spikelm eval smollm2 --task wikitext2 --data-dir ../shared/data/text --max-tokens 4096

    Masked LM: spikelm eval runs/pretrain/final --task wikitext2 --data-dir ../shared/data/text -s data.eval_subset=200

    Generation: spikelm eval runs/smollm2-spiking --chat --prompt "What is the capital of France?" --compare-dense --dense smollm2

    Firing picture: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --plot-firing firing.png
    """
    from spikelm_core.config.schema import TASK_NAMES, normalize_task, task_family
    from spikelm_core.errors import ConfigError
    from spikelm_core.training.evaluate import run_eval
    from spikelm_core.training.rundir import settings_of_run

    is_recipe = source is not None and source.endswith((".yaml", ".yml"))
    if source is None and model is None:
        raise ConfigError("give a model to evaluate (MODEL argument or --model) or an eval recipe",
                          hint="spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue")
    if not is_recipe and source is not None and model is not None and source != model:
        raise ConfigError("two models given: the MODEL argument and --model differ",
                          details=[f"MODEL: {source}", f"--model: {model}"], hint="give the model once")
    if plot_firing is None and (firing_text is not None or firing_example is not None):
        raise ConfigError("--firing-text and --firing-example choose the input of --plot-firing",
                          hint="add --plot-firing firing.png")
    generation_flags = _given(max_new_tokens=max_new_tokens, chat=chat, greedy=greedy, temperature=temperature,
                              top_p=top_p, compare_dense=compare_dense)
    if prompt is None and generation_flags and not is_recipe:
        raise ConfigError(f"{', '.join(generation_flags)} {'is' if len(generation_flags) == 1 else 'are'} for "
                          "generation: add --prompt TEXT", hint=_GENERATE_EXAMPLE)
    if greedy and (temperature is not None or top_p is not None):
        raise ConfigError("--greedy decodes without sampling; --temperature and --top-p sample: choose one")
    if prompt is not None:
        text_flags = _given(seq_len=seq_len, stride=stride, max_tokens=max_tokens, plot_firing=plot_firing,
                            data_dir=data_dir)
        if text_flags:
            raise ConfigError(f"{', '.join(text_flags)}: --prompt generates text and scores no task",
                              hint="drop them, or drop --prompt to score a task (e.g. --task wikitext2)")
        if dense is not None and not compare_dense:
            raise ConfigError("--dense names the model --compare-dense continues the prompt with",
                              hint="add --compare-dense, or drop --dense")
    if plot_firing is not None:
        from spikelm_core.firing_plots import check_picture_path

        check_picture_path(plot_firing)  # fail before any work
    render.enable_library_logs()
    sample = True if (temperature is not None or top_p is not None) else (False if greedy else None)
    flags = {
        "data.seq_len": seq_len, "data.stride": stride, "data.max_tokens": max_tokens, "dense_reference": dense,
        "seed": seed, "prompt.text": prompt, "prompt.max_new_tokens": max_new_tokens, "prompt.chat": chat or None,
        "prompt.sample": sample, "prompt.temperature": temperature, "prompt.top_p": top_p,
        "prompt.compare_dense": compare_dense or None,
    }
    if not is_recipe and prompt is None and (model or source) is not None and not _sets_data(overrides):
        from spikelm_core.training.rundir import task_of_run

        # `spikelm eval runs/sst2/final` (or with --task sst2): the run's task, on the run's data
        of_run = task_of_run(model or source, task, data_given=data_dir is not None)
        if of_run is not None:
            task, run_sets = of_run
            overrides = [*(run_sets if data_dir is None else []), *(overrides or [])]
    perplexity_flags = _given(seq_len=seq_len, stride=stride, max_tokens=max_tokens, dense=dense)

    def refuse_perplexity_flags(scored: str) -> None:
        raise ConfigError(f"{', '.join(perplexity_flags)} {'is' if len(perplexity_flags) == 1 else 'are'} for "
                          f"wikitext2 (perplexity); this eval scores {scored}",
                          hint="drop them, or use --task wikitext2 to score perplexity")

    if prompt is None and perplexity_flags and task is not None and normalize_task(task) in TASK_NAMES \
            and task_family(normalize_task(task)) != "lm":  # said by the flags' names, before the recipe's rules
        refuse_perplexity_flags(normalize_task(task))
    cfg = load_run_config(EvalConfig, Path(source) if is_recipe else None, overrides, task=task,
                          model=model or (None if is_recipe else source), data_dir=data_dir, out_dir=out_dir, **flags)
    cfg = settings_of_run(cfg)  # a run's model is cut and generated for as that run did, unless set here
    if cfg.prompt is None and cfg.task_family != "lm" and perplexity_flags:
        refuse_perplexity_flags(cfg.task)
    if print_config:
        print_config_and_exit(cfg, format)
    if cfg.prompt is not None:
        if plot_firing is not None:
            raise ConfigError("--plot-firing pictures a task's input; the recipe's prompt generates text",
                              hint="drop --plot-firing, or prompt from the recipe")
        from spikelm_core.training.evaluate import run_generation

        render.generation_result(run_generation(cfg), format)
        return
    written = None
    if plot_firing is not None:  # before scoring: a bad input fails at once, and the picture is kept
        from spikelm_core.firing_plots import picture_paths, write_firing_picture
        from spikelm_core.training.firing_picture import run_firing_picture
        from spikelm_core.training.pipeline import EVAL_OUTPUTS, check_eval_out_dir

        check_eval_out_dir(cfg.out_dir)  # the --out-dir refusals too come before the picture's work
        if cfg.out_dir:
            clash = [p for p in picture_paths(plot_firing)
                     if p.resolve() in {(Path(cfg.out_dir) / name).resolve() for name in EVAL_OUTPUTS}]
            if clash:
                raise ConfigError(f"--plot-firing would write '{clash[0]}', where --out-dir keeps its "
                                  f"{clash[0].name}", hint="choose another picture name, e.g. --plot-firing "
                                  f"{Path(cfg.out_dir) / 'firing.png'}")
        picture = run_firing_picture(cfg, text=firing_text, example=firing_example)
        written = write_firing_picture(picture, plot_firing)
        render.firing_picture_written(picture, written)
    result = run_eval(cfg, progress=render.eval_progress(),
                      firing_picture={"png": str(written[0]), "data": str(written[1])} if written else None)
    render.eval_result(result, format)


_GENERATE_EXAMPLE = 'spikelm eval runs/smollm2-spiking --chat --prompt "What is the capital of France?"'


def _sets_data(overrides: list[str] | None) -> bool:
    """Whether `-s` chooses the task or where its data is (then a run's own are not taken). A malformed
    item counts for nothing here: loading the config reports it."""
    from spikelm_core.config import parse_overrides

    keys = {"data.task", "data.source", "data.data_dir", "data.validation_file"}
    return any(key in keys for key, _ in parse_overrides(overrides or [], []))


def _given(**options) -> list[str]:
    """The `--flag` spellings of the options that were given (not None, not False)."""
    return [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None and value is not False]
