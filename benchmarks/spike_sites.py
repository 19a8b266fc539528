"""Where conversion loses accuracy: a dense GLUE model converted to SpikeLM, one neuron site at a time.

    python benchmarks/spike_sites.py runs/glue-stsb-teacher/final --task stsb --data-dir ../shared/data/glue
    python benchmarks/spike_sites.py runs/glue-stsb-teacher/final --task stsb --data-dir ../shared/data/glue --channel-scale

The dense fine-tuned model is converted (elastic bi-spiking, `--timesteps` T, k = 2) and calibrated on its
first `--calib-rows` training rows (`spikelm distill` calibrates a twin on its first training batch). A site is one
kind of neuron in every layer (before Q/K/V, the K and V spikes, before the attention output, before FFN1,
before FFN2). For each site the first `--dev-rows` dev rows are scored twice, with that site alone spiking
(the others pass their float input on) and with every site spiking but that one, beside the dense model
and the fully spiking one (and, as a check, the converted model with no site spiking). No training happens: this measures what each site's spikes cost a converted
model, the starting point of distillation. Prints a table; `--out` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import DataCollatorWithPadding  # noqa: E402

from spikelm_core.calibration import calibrate, model_inputs, spiking_neurons  # noqa: E402
from spikelm_core.checkpoints import load_model  # noqa: E402
from spikelm_core.data.glue import get_glue_task, load_glue, quiet_progress, tokenize_glue  # noqa: E402
from spikelm_core.evaluation.metrics import glue_metrics, predictions_from_logits, primary_metric  # noqa: E402
from spikelm_core.neurons.settings import NeuronSettings  # noqa: E402


def site_of(neuron_name: str) -> str:
    """'bert.encoder.layer.3.attention.self.key.neuron' -> 'attention.self.qkv.neuron': the layer index
    dropped, and Q, K and V (which read one input and may share one spike pass) as one site."""
    site = re.sub(r"^.*?layer\.\d+\.", "", neuron_name)
    return re.sub(r"\.(query|key|value)\.neuron$", ".qkv.neuron", site)


@contextmanager
def float_sites(model, sites: set[str]):
    """Inside the block the neurons of `sites` pass their input on unchanged (no spikes)."""
    patched = [n for name, n in spiking_neurons(model) if site_of(name) in sites]
    for n in patched:
        n.forward = lambda x: x
    try:
        yield
    finally:
        for n in patched:
            del n.forward


def glue_batches(args, tok) -> tuple[dict, list[dict], int]:
    """(calibration batch of the first `args.calib_rows` training rows, the first `args.dev_rows` dev rows
    in padded batches of `args.batch_size`, how many dev rows there are) of `args.task` under `args.data_dir`."""
    collate = DataCollatorWithPadding(tok)
    with quiet_progress():
        train = tokenize_glue(load_glue(args.task, args.data_dir, split="train", subset=args.calib_rows), tok)
        dev = tokenize_glue(load_glue(args.task, args.data_dir, split="validation", subset=args.dev_rows), tok)
    batches = [collate([dev[j] for j in range(i, min(i + args.batch_size, len(dev)))])
               for i in range(0, len(dev), args.batch_size)]
    return collate([train[i] for i in range(len(train))]), batches, len(dev)


def score(model, task: str, batches) -> float:
    logits, labels = [], []
    with torch.no_grad():
        for batch in batches:
            logits.append(model(**model_inputs(batch)).logits)
            labels.append(batch["labels"])
    preds = predictions_from_logits(task, torch.cat(logits))
    return 100.0 * glue_metrics(task, preds, torch.cat(labels).numpy())[primary_metric(task)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="dense fine-tuned GLUE model directory (e.g. a teacher's final/)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--data-dir", required=True, help="GLUE root, e.g. ../shared/data/glue")
    ap.add_argument("--timesteps", "-T", type=int, default=4)
    ap.add_argument("--channel-scale", action="store_true", help="per-channel amplitudes (neuron.channel_scale)")
    ap.add_argument("--dev-rows", type=int, default=400)
    ap.add_argument("--calib-rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    get_glue_task(args.task)

    dense = load_model(args.model, head=None, neuron=NeuronSettings(kind="dense"))
    tok = dense.tokenizer
    calib, batches, dev_rows = glue_batches(args, tok)
    result = {"model": args.model, "task": args.task, "metric": primary_metric(args.task), "dev_rows": dev_rows,
              "timesteps": args.timesteps, "channel_scale": args.channel_scale,
              "dense": score(dense.model.eval(), args.task, batches)}

    settings = NeuronSettings(num_timesteps=args.timesteps, channel_scale=args.channel_scale)
    spiking = load_model(args.model, head=None, neuron=settings).model
    calibrate(spiking, calib)
    spiking.eval()
    sites = list(dict.fromkeys(site_of(name) for name, _ in spiking_neurons(spiking)))
    result["all_spiking"] = score(spiking, args.task, batches)
    with float_sites(spiking, set(sites)):  # a check: no site spiking is the dense model again
        result["no_site_spiking"] = score(spiking, args.task, batches)
    result["sites"] = {}
    for site in sites:
        with float_sites(spiking, set(sites) - {site}):
            alone = score(spiking, args.task, batches)
        with float_sites(spiking, {site}):
            without = score(spiking, args.task, batches)
        result["sites"][site] = {"only_this_site_spiking": alone, "all_but_this_site_spiking": without}

    print(f"{args.task} ({result['metric']} x 100, first {dev_rows} dev rows), T={args.timesteps}"
          f"{', channel_scale' if args.channel_scale else ''}: dense {result['dense']:.1f}, "
          f"all sites spiking {result['all_spiking']:.1f}, none {result['no_site_spiking']:.1f}")
    print(f"{'site':34} {'only this site spiking':>24} {'all but this site':>18}")
    for site, row in result["sites"].items():
        print(f"{site:34} {row['only_this_site_spiking']:24.1f} {row['all_but_this_site_spiking']:18.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    from spikelm_cli.errors import run_script

    run_script(main)
