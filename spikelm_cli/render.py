"""Rendering of results: rich tables for people, JSON for programs. No computation here."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from spikelm_core.log import hms

from .console import err, out


def print_text(text: str) -> None:
    """Machine-readable text to stdout as it is: never highlighted, styled or wrapped by rich (which
    colours a terminal, and any stdout under FORCE_COLOR: invalid JSON in a file)."""
    out.file.write(text if text.endswith("\n") else text + "\n")
    out.file.flush()


def print_json(data) -> None:
    """`--format json`: plain standard JSON on stdout (a non-finite number as null, as JSON has none)."""
    from spikelm_core.training.results import json_values

    print_text(json.dumps(json_values(data), indent=2, ensure_ascii=False))


def convert_summary(r) -> None:
    t = Table(title="spiking model", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")  # a path is folded, never cut (stdout in a file or log is 80 columns)
    s = r.settings
    t.add_row("saved to", escape(r.out_dir))
    t.add_row("source", escape(r.source))
    t.add_row("architecture", r.architecture)
    t.add_row("parameters", f"{r.parameters:,}")
    t.add_row("weights copied", f"{r.copied_tensors} tensors")
    t.add_row("neurons inserted", ", ".join(f"{n} {k}" for k, n in r.neurons.items()))
    if s["neuron_kind"] == "lif":  # k, reset and levels are the elastic neuron's; LIF has its own constants
        shown = f"lif, T={s['num_timesteps']}" + "".join(
            f", {label}={s[key]:g}" for key, label in (("lif_tau", "tau"), ("lif_v_threshold", "threshold"),
                                                     ("lif_v_reset", "v_reset")) if s.get(key) is not None)
    else:
        shown = (f"{s['neuron_kind']}, T={s['num_timesteps']}, k={s['k']:g}, reset={s['reset']}, levels={s['levels']}"
                 + (", per-channel amplitudes" if s.get("channel_scale") else ""))
    t.add_row("neuron settings", shown)
    if r.alpha_min is not None:
        t.add_row("amplitude range", f"{r.alpha_min:.4g} .. {r.alpha_max:.4g}")
    if r.allocation:
        a = r.allocation
        parts = []
        if a["input_channels"]:
            mode = f"{s['salient_steps']} sub-steps" if s["salient_mode"] == "steps" else "float"
            parts.append(f"{a['salient_channels']:,} of {a['input_channels']:,} input channels salient ({mode})")
        if a["k_chosen"]:
            parts.append("k chosen: " + ", ".join(f"{k} x{n}" for k, n in a["k_chosen"].items()))
        t.add_row("allocation", "; ".join(parts))
    t.add_row("firing rate", f"{r.firing_rate:.3f} ({r.firing_rate_mean}; {r.firing_tokens:,} tokens)")
    t.add_row("per layer", layer_rates_text(r.layer_firing_rates))
    t.add_row("calibration text", "spikelm's packaged prose" if r.calibration_text == "packaged" else escape(r.calibration_text))
    t.add_row("time", f"{r.seconds:.1f} s")
    out.print(t)  # its warnings were logged as they arose (convert shows the library's log); JSON lists them
    if r.newly_initialised:
        err.print(f"[yellow]note:[/] {len(r.newly_initialised)} tensor(s) not in the checkpoint were initialised "
                  f"randomly, e.g. {r.newly_initialised[0]}")


# -- training commands (finetune, distill, pretrain, eval) -------------------------------------

def _metric(v) -> str:
    """A metric as shown: counts (tokens, windows) as integers, scores to 4 decimals (in scientific
    notation from a million on: a diverged model's perplexity is not hundreds of digits)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:.4e}" if abs(v) >= 1e6 else f"{v:.4f}"


def enable_library_logs(level: int = 20) -> None:
    """Route the `spikelm` logger (INFO and up) to stderr as `info: ...` / `warning: ...` lines."""
    import logging
    import sys

    logger = logging.getLogger("spikelm")
    for h in list(logger.handlers):
        if getattr(h, "_spikelm_cli", False):
            logger.removeHandler(h)
    class _Stderr(logging.Handler):  # looks up sys.stderr on every record (test runners swap it)
        def emit(self, record):
            try:
                sys.stderr.write(self.format(record) + "\n")
            except Exception:
                self.handleError(record)

    from spikelm_core.training.rundir import is_main_process

    handler = _Stderr()
    handler._spikelm_cli = True
    handler.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    handler.addFilter(_lower_level)
    logger.addHandler(handler)
    # under torchrun the other ranks say what the main process says: their info and warnings stay quiet
    logger.setLevel(level if is_main_process() else max(level, logging.ERROR))


def _lower_level(record) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def status_line(step: int, total: int, logs: dict, ms_per_step: float | None) -> str:
    """`step 2000/20000 | loss 0.412 (ce 0.318, kd 0.094) | lr 4.8e-05 | spike rate 0.137 | 41 ms/step | eta 0:12:20`"""
    parts = [f"step {step}/{total}"]
    if "loss" in logs:
        sub = [f"{k[5:]} {v:.3f}" for k, v in logs.items() if k.startswith("loss_") and isinstance(v, (int, float))]
        parts.append(f"loss {logs['loss']:.3f}" + (f" ({', '.join(sub)})" if sub else ""))
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2g}")
    if "firing_rate" in logs:
        parts.append(f"spike rate {logs['firing_rate']:.3f}")
    if ms_per_step is not None:
        parts.append(f"{ms_per_step:.0f} ms/step")
        parts.append(f"eta {hms(ms_per_step * max(0, total - step) / 1000)}")
    return " | ".join(parts)


def progress_callback():
    """A TrainerCallback drawing progress on stderr (main process only): a rich progress bar with
    loss, learning rate, firing rate and throughput on a terminal; plain status lines (one per
    logged step) otherwise. Evaluation results print as one line each."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None
            self.t_last = None
            self.step_last = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.t_last, self.step_last = time.perf_counter(), state.global_step
            if err.is_terminal:
                self.bar = Progress(
                    TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                    TimeRemainingColumn(), console=err, transient=False,
                )
                self.bar.start()
                self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, status="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                now = time.perf_counter()
                steps = state.global_step - self.step_last
                ms = (now - self.t_last) * 1000 / steps if steps > 0 else None
                self.t_last, self.step_last = now, state.global_step
                line = status_line(state.global_step, state.max_steps, logs, ms)
                if self.bar is not None:
                    self.bar.update(self.task, status=line.split(" | ", 1)[1] if " | " in line else "")
                else:
                    err.print(line, soft_wrap=True, markup=False)
            elif any(k.startswith("eval_") for k in logs):
                shown = [f"{k[5:]} {v:.4f}" for k, v in logs.items()
                         if k.startswith("eval_") and isinstance(v, float) and not k.endswith(("_runtime", "_per_second"))]
                msg = f"eval step {state.global_step} | " + " | ".join(shown)
                (self.bar.console if self.bar is not None else err).print(msg, soft_wrap=True, markup=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return _Progress()


def layer_rates_text(rates: dict[str, float]) -> str:
    """Per-layer rates in layer order: bare numbers for one stack (BERT's `layer.N`, a Llama's
    `layers.N`), named otherwise (BART's `encoder.layers.N` / `decoder.layers.N`, kept apart)."""
    if all(key.split(".")[0] in ("layer", "layers") and key.count(".") == 1 for key in rates):
        return " ".join(f"{v:.3f}" for v in rates.values())
    return " ".join(f"{key.replace('.layers.', '.')} {v:.3f}" for key, v in rates.items())


def training_result(r, fmt) -> None:
    """Summary of a finetune/distill/pretrain run (stdout), or its JSON; printed by the main process
    alone under torchrun (every rank returns the same result)."""
    from spikelm_core.training.rundir import is_main_process

    if not is_main_process():
        return
    if getattr(fmt, "value", fmt) == "json":
        print_json(r.to_dict())
        return
    t = Table(title=f"spikelm {r.command}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")  # a path is folded, never cut (stdout in a file or log is 80 columns)
    t.add_row("run directory", escape(r.out_dir))
    t.add_row("final model", escape(r.final_dir))
    if r.task:
        t.add_row("task", r.task)
    t.add_row("steps", f"{r.global_step} ({r.epochs:.2f} epochs)")
    if r.resumed_from:
        t.add_row("resumed from", escape(r.resumed_from))
    if r.train_loss is not None:
        since = ""
        if r.resumed_from:  # the Trainer's mean covers the steps after the checkpoint only
            since = f" (mean of steps {(r.resumed_at_step or 0) + 1}-{r.global_step}, this call)"
        t.add_row("train loss", f"{r.train_loss:.4f}{since}")
    for split, metrics in r.metrics.items():
        shown = ", ".join(f"{k} {_metric(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))
        t.add_row(f"{split}", shown)
    if r.best_checkpoint:
        t.add_row("best checkpoint", escape(r.best_checkpoint))
    if r.firing_rate is not None:
        t.add_row("firing rate", f"{r.firing_rate:.3f} ({r.firing_rate_mean})")
        t.add_row("per layer", layer_rates_text(r.layer_firing_rates))
    if r.target_firing_rate is not None:
        t.add_row("target rate", f"{r.target_firing_rate:.3f} per layer (train.target_firing_rate)")
    if r.calibration:
        t.add_row("calibration", f"amplitudes calibrated on {r.calibration}")
    if r.samples_per_second:
        t.add_row("throughput", f"{r.samples_per_second:.1f} samples/s")
    if r.precision:
        t.add_row("precision", r.precision)
    t.add_row("time", f"{r.seconds:.1f} s")
    out.print(t)
    for w in r.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


def eval_progress(every_s: float = 10.0):
    """A `run_eval` progress callback (language modelling) drawing on stderr: a rich bar per scoring
    pass on a terminal; otherwise a status line every `every_s` seconds and at the end of each pass:
    `test, spiking: windows 12/40 | 310 tokens/s | eta 0:01:30` (a masked LM counts sequences)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    state = {"what": None, "bar": None, "task": None, "last": 0.0}

    def line(what, done, total, read, seconds, unit) -> str:
        parts = [f"{what}: {unit} {done}/{total}"]
        if seconds > 0:
            parts.append(f"{read / seconds:.0f} tokens/s")
            if done < total:
                parts.append(f"eta {hms(seconds / done * (total - done))}")
            else:
                parts.append(f"{seconds:.1f} s")
        return " | ".join(parts)

    def progress(what, done, total, read, seconds, unit="windows") -> None:
        if state["what"] != what:  # a new pass (split, spiking or dense)
            if state["bar"] is not None:
                state["bar"].stop()
            state.update(what=what, bar=None, last=time.perf_counter())
            if err.is_terminal:
                bar = Progress(TextColumn(f"[bold]{escape(what)}[/]"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=False)
                bar.start()
                state.update(bar=bar, task=bar.add_task(what, total=total, rate=""))
        if state["bar"] is not None:
            state["bar"].update(state["task"], completed=done,
                                rate=f"{read / seconds:.0f} tokens/s" if seconds > 0 else "")
            if done >= total:
                state["bar"].stop()
                state["bar"] = None
            return
        now = time.perf_counter()
        if done >= total or now - state["last"] >= every_s:
            state["last"] = now
            err.print(line(what, done, total, read, seconds, unit), soft_wrap=True, markup=False)

    return progress


def _lm_result(r) -> None:
    """Perplexity per split (dense beside spiking) and the window settings of `eval --task wikitext2`."""
    dense = any("dense_perplexity" in m for m in r.metrics.values())
    t = Table(title=f"spikelm eval: {r.task} (perplexity)", title_justify="left")
    t.add_column("split", style="bold")
    t.add_column("tokens", justify="right")
    t.add_column("windows", justify="right")
    t.add_column("perplexity", justify="right")
    if dense:
        t.add_column("dense", justify="right")
        t.add_column("change", justify="right")
    for split, m in r.metrics.items():
        row = [split, f"{int(m['tokens']):,}", f"{int(m['windows']):,}", f"{m['perplexity']:.3f}"]
        if dense:
            d = m.get("dense_perplexity")
            row += [f"{d:.3f}" if d is not None else "", f"{m['perplexity'] / d:.3f} x" if d else ""]
        t.add_row(*row)
    out.print(t)
    out.print(f"model: {escape(r.model)}" + (CONVERTED_HERE if r.converted else ""))
    if r.dense_model:
        out.print(f"dense reference: {escape(r.dense_model)}")
    framing = "BOS included" if r.window_bos is not False else "no BOS token: the tokenizer has none"
    out.print(f"windows: {r.seq_len} positions ({framing}), stride {r.stride}")
    speed = [f"{r.tokens_per_second:.0f} tokens/s"] if r.tokens_per_second else []
    if r.dense_tokens_per_second:
        speed.append(f"dense {r.dense_tokens_per_second:.0f} tokens/s")
    if speed:
        out.print("throughput: " + ", ".join(speed) + " (positions read, BOS and context included)")
    out.print(f"time: {r.seconds:.1f} s")
    if r.firing_rate is not None:
        out.print(f"firing rate: {r.firing_rate:.3f} ({r.firing_rate_mean})")
        out.print(f"per layer: {layer_rates_text(r.layer_firing_rates)}", soft_wrap=True)
    for w in r.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


def generation_result(r, fmt) -> None:
    """`eval --prompt`: the continuation(s) and tokens/s (stdout), or their JSON; printed by the main process
    alone under torchrun."""
    from spikelm_core.training.rundir import is_main_process

    if not is_main_process():
        return
    if getattr(fmt, "value", fmt) == "json":
        print_json(r.to_dict())
        return
    d = r.decoding
    how = (f"sampled (temperature {d['temperature']:g}, top-p {d['top_p']:g}, seed {d['seed']})" if d.get("sample")
           else "greedy")
    out.print(f"[bold]prompt[/] ({r.prompt_tokens} tokens{', chat template' if r.chat else ''}; {how}):", soft_wrap=True)
    out.print(escape(r.prompt), soft_wrap=True)
    kind = f"spiking, T={r.timesteps}" if r.timesteps is not None else "dense"
    out.print(f"\n[bold]{escape(r.model)}[/] ({kind}): {r.tokens} tokens in {r.seconds:.1f} s, "
              f"{r.tokens_per_second:.1f} tokens/s, stopped by {r.finish_reason}", soft_wrap=True)
    out.print(escape(r.text), soft_wrap=True)
    if r.dense is not None:
        c = r.dense
        out.print(f"\n[bold]{escape(c.model)}[/] (dense): {c.tokens} tokens in {c.seconds:.1f} s, "
                  f"{c.tokens_per_second:.1f} tokens/s, stopped by {c.finish_reason}", soft_wrap=True)
        out.print(escape(c.text), soft_wrap=True)


#: After the model's name, when eval converted a dense model (EvalResult.converted)
CONVERTED_HERE = " (dense: converted here and calibrated as spikelm convert does)"


def eval_result(r, fmt) -> None:
    """Dev metrics and per-layer firing rates of `spikelm eval` (stdout), or their JSON; printed by the
    main process alone under torchrun (every rank returns the same result)."""
    from spikelm_core.training.rundir import is_main_process

    if not is_main_process():
        return
    if getattr(fmt, "value", fmt) == "json":
        print_json(r.to_dict())
        return
    if r.perplexity is not None:
        _lm_result(r)
        return
    t = Table(title=f"spikelm eval: {r.task}", title_justify="left")
    t.add_column("split", style="bold")
    t.add_column("examples", justify="right")
    t.add_column("metrics", overflow="fold")
    for split, metrics in r.metrics.items():
        ci = (r.intervals or {}).get(split, {})  # summarisation: the bootstrap interval beside each ROUGE
        shown = ", ".join(f"{k} {_metric(v)}" + (f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if k in ci else "")
                          for k, v in metrics.items())
        t.add_row(split, str(r.examples.get(split, "")), shown)
    out.print(t)
    if r.intervals:
        out.print("[low, high]: 95% bootstrap interval of each ROUGE mean (1,000 resamples of the documents)",
                  markup=False)
    out.print(f"model: {escape(r.model)}" + (CONVERTED_HERE if r.converted else "")
              + (f"   precision: {r.precision}" if r.precision else ""))
    for split, samples in (r.summaries or {}).items():  # summarisation: what the model wrote, beside ROUGE
        if samples:
            s = samples[0]
            out.print(f"{split}, first summary: {escape(s['prediction']) or '(empty)'}\n"
                      f"  reference: {escape(s['reference'])}", soft_wrap=True)
    if r.firing_rate is not None:
        out.print(f"firing rate: {r.firing_rate:.3f} ({r.firing_rate_mean})   per layer: "
                  + layer_rates_text(r.layer_firing_rates))


def firing_picture_written(picture, paths) -> None:
    """Where `eval --plot-firing` wrote its picture, and what it shows (stderr: stdout keeps the results)."""
    png, data = paths
    err.print(f"firing picture of {escape(picture.describe_input())}: [bold]{escape(str(png))}[/] "
              f"(data: {escape(str(data))})", soft_wrap=True)
    for panel in picture.panels:
        err.print(f"  {panel.side}, {len(panel.tokens)} tokens: {escape(layer_rates_text(panel.layer_rates()))}",
                  soft_wrap=True)
        if panel.dead_layers():
            err.print(f"  [yellow]dead (no spike at any token):[/] {escape(', '.join(panel.dead_layers()))}",
                      soft_wrap=True)
    for note in picture.notes:
        if note.startswith("free text cut"):
            err.print(f"  [yellow]note:[/] {escape(note)}", soft_wrap=True)
