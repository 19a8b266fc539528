"""How far a spiking twin's hidden states sit from its dense teacher's, layer by layer, beside its score.

    python benchmarks/hidden_gap.py runs/glue-stsb-teacher/final --task stsb --data-dir ../shared/data/glue \\
        --student runs/glue-stsb-twin/spikelm/final --convert '' --convert reset=soft,decay=0.5

For every student (a trained spiking checkpoint given with `--student`, or the teacher converted here with
the neuron settings of a `--convert`: `key=value` pairs of the neuron section on top of the twin
template's, recipes/minilm_glue/base/twin.yaml (T=4, k=2, per-channel amplitudes), calibrated on the
first `--calib-rows` training rows as `spikelm distill` calibrates a twin) the first `--dev-rows` dev
rows are scored, and each encoder layer's output is compared with the teacher's: the relative error is
the hidden-state MSE of distillation (`losses.hidden_mse`, over real tokens) divided by the teacher's
mean square on the same tokens. 0 is the teacher's state, 1 is no closer than a state of zeros.
No training happens. Prints a table; `--out` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from spikelm_core.calibration import calibrate, model_inputs  # noqa: E402
from spikelm_core.checkpoints import load_model  # noqa: E402
from spikelm_core.data.glue import get_glue_task  # noqa: E402
from spikelm_core.evaluation.metrics import glue_metrics, predictions_from_logits, primary_metric  # noqa: E402
from spikelm_core.neurons.settings import NeuronSettings  # noqa: E402
from spikelm_core.training.losses import hidden_mse  # noqa: E402
from spike_sites import glue_batches  # noqa: E402  (beside this script)

#: the twin template, whose neuron section a --convert starts from
TEMPLATE = Path(__file__).resolve().parents[1] / "recipes" / "minilm_glue" / "base" / "twin.yaml"


def neuron_of(pairs: str) -> NeuronSettings:
    """'reset=soft,decay=0.5' -> the template's neuron with those fields."""
    fields = dict(yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))["neuron"])
    for item in filter(None, pairs.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--convert {pairs!r}: expected key=value pairs separated by commas")
        fields[key.strip()] = yaml.safe_load(value)
    return NeuronSettings(**fields)


def teacher_reference(teacher, batches) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """The teacher's encoder-layer outputs for every batch, and per layer their mean square over real
    tokens (the error of an all-zero state, weighted by each batch's tokens as `measure` weighs errors):
    computed once for all the models compared."""
    states, scale = [], None
    with torch.no_grad():
        for batch in batches:
            layers = teacher(**model_inputs(batch), output_hidden_states=True).hidden_states[1:]
            mask = batch["attention_mask"]
            z = torch.stack([hidden_mse((torch.zeros_like(h),), (h,), mask) for h in layers]) * mask.sum()
            scale = z if scale is None else scale + z
            states.append(layers)
    return states, scale


def measure(model, reference, task: str, batches) -> dict:
    """The model's dev score and, per encoder layer, its hidden-state error against the teacher's states
    relative to their mean square (`reference` from `teacher_reference`)."""
    states, scale = reference
    logits, labels, err = [], [], None
    with torch.no_grad():
        for batch, t_layers in zip(batches, states):
            inputs = model_inputs(batch)
            s = model(**inputs, output_hidden_states=True)
            mask = inputs["attention_mask"]
            e = torch.stack([hidden_mse((a,), (b,), mask) for a, b in zip(s.hidden_states[1:], t_layers)]) * mask.sum()
            err = e if err is None else err + e
            logits.append(s.logits)
            labels.append(batch["labels"])
    preds = predictions_from_logits(task, torch.cat(logits))
    metric = 100.0 * glue_metrics(task, preds, torch.cat(labels).numpy())[primary_metric(task)]
    return {"metric": metric, "relative_error": (err / scale).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", help="dense fine-tuned GLUE model directory (e.g. a teacher's final/)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--data-dir", required=True, help="GLUE root, e.g. ../shared/data/glue")
    ap.add_argument("--student", action="append", default=[], help="a trained spiking checkpoint (repeatable)")
    ap.add_argument("--convert", action="append", default=[], metavar="KEY=VALUE,...",
                    help="convert the teacher with these neuron fields (repeatable; '' = the template's)")
    ap.add_argument("--dev-rows", type=int, default=400)
    ap.add_argument("--calib-rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.student and not args.convert:
        ap.error("give at least one --student or --convert")
    torch.manual_seed(0)
    spec = get_glue_task(args.task)
    num_labels = spec.num_labels

    teacher = load_model(args.teacher, head="sequence_classification", num_labels=num_labels,
                         neuron=NeuronSettings(kind="dense"))
    calib, batches, dev_rows = glue_batches(args, teacher.tokenizer)
    teacher = teacher.model.eval()
    reference = teacher_reference(teacher, batches)

    rows = {"teacher": measure(teacher, reference, args.task, batches)}
    for path in args.student:
        model = load_model(path, head="sequence_classification", num_labels=num_labels).model.eval()
        rows[path] = measure(model, reference, args.task, batches)
    for pairs in args.convert:
        model = load_model(args.teacher, head="sequence_classification", num_labels=num_labels,
                           neuron=neuron_of(pairs)).model
        calibrate(model, dict(calib))
        rows[f"converted {pairs or '(template)'}"] = measure(model.eval(), reference, args.task, batches)

    print(f"{args.task} ({primary_metric(args.task)} x 100, first {dev_rows} dev rows); relative hidden-state "
          "error per encoder layer")
    width = max(len(name) for name in rows)
    for name, row in rows.items():
        layers = " ".join(f"{x:5.2f}" for x in row["relative_error"])
        print(f"{name:{width}}  {row['metric']:6.1f}  {layers}")
    if args.out:
        args.out.write_text(json.dumps({"teacher": args.teacher, "task": args.task, "dev_rows": dev_rows,
                                        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    from spikelm_cli.errors import run_script

    run_script(main)
