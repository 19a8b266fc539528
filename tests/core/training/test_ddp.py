"""A 2-process DDP fine-tuning run on CPU (gloo) launched with torchrun, as a one-point sweep: it
completes, both ranks hold identical amplitudes after the explicit calibration and at the end of
training, and the main process alone reports, audits and writes the sweep's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_fixtures import make_tiny_dense, write_glue

REPO = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import json, os, sys
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
from transformers import TrainerCallback
from spikelm_core.config import FinetuneConfig, load_config
from spikelm_core.calibration import spiking_neurons
from spikelm_core.sweep import run_sweep, with_grid

def amplitudes(model):
    return {{n: m.alpha.tolist() for n, m in spiking_neurons(model) if hasattr(m, "alpha")}}

class Dump(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.begin = amplitudes(model)
    def on_train_end(self, args, state, control, model=None, **kw):
        rank = int(os.environ["RANK"])
        out = {{"begin": self.begin, "end": amplitudes(model), "world": args.world_size, "step": state.global_step}}
        with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as fh:
            json.dump(out, fh)

cfg = with_grid(load_config(FinetuneConfig, {recipe!r}, {overrides!r}, out_dir={run!r}), {{"neuron.k": [2.0]}})
report = run_sweep(cfg, callbacks=[Dump()], progress=lambda message: print("say:", message, flush=True))
'''


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    dense = make_tiny_dense(tmp_path / "dense")
    glue = write_glue(tmp_path / "glue", n_train=20)
    overrides = [f"model={dense}", "data.source=glue/sst2", f"data.data_dir={glue}", "data.max_length=16",
                 "neuron.num_timesteps=3", "train.batch_size=5", "train.max_steps=3", "train.eval_strategy=no",
                 "train.keep_best=false", "train.device=cpu", "train.logging_steps=1"]
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(repo=str(REPO), out=str(tmp_path), recipe=str(REPO / "recipes/tiny/finetune.yaml"),
                                    overrides=overrides, run=str(tmp_path / "run")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "0",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 3
    assert r0["begin"] and r0["begin"] == r1["begin"]
    assert r0["end"] == r1["end"]
    point = tmp_path / "run" / "k2"
    assert (point / "final" / "model.safetensors").is_file() and (point / "sweep_point.json").is_file()
    assert len([x for x in (point / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]) == 3
    assert json.loads((point / "sweep_point.json").read_text())["energy"]["ratio"] > 1  # audited once, by rank 0
    assert (tmp_path / "run" / "sweep.json").is_file()
    said = [line for line in proc.stdout.splitlines() if line.startswith("say:")]
    assert said and len(said) == len(set(said))  # the main process alone reports
