"""`train.weight_average`: an exponential moving average (EMA) of the trained weights, the model that
is evaluated, kept as the best checkpoint and saved as final/.

After every optimizer step each trainable parameter's average moves towards it:

    avg <- d_n * avg + (1 - d_n) * w,   d_n = min(decay, (1 + n) / (10 + n)),   n = updates so far

starting from the weights training starts with. The warm-up of d_n (as TensorFlow's
`ExponentialMovingAverage` with `num_updates`) keeps the average from leaning on the start weights
early in a short run. Neuron state (amplitudes, calibration flags, per-channel scales) is not averaged:
it is fixed after calibration (amplitudes learnt with `learn_alpha` are parameters, and averaged).

The Trainer itself keeps training the raw weights: each checkpoint-<step>/ holds them (so `--resume`
continues exactly) and the average beside them in `weight_average.safetensors`. Evaluations swap the
average in and back out (`SpikelmTrainer.evaluate`), so the best checkpoint is the best average; when
training ends the model takes the average of the best checkpoint (`keep_best`) or the last one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..checkpoints import read_tensors, write_tensors
from ..errors import CheckpointError

FILE = "weight_average.safetensors"
"""The average's file in each checkpoint-<step>/ of a run with `train.weight_average`."""


def decay_at(decay: float, updates: int) -> float:
    """d_n: the weight of the old average in update number `updates` (0-based)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """The running average of a model's trainable parameters (float32 copies on their devices)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.average = {name: params[name].detach().float().clone() for name in self.names}

    def _params(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        params = dict(model.named_parameters())
        return [params[name] for name in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average towards the model's current weights."""
        d = decay_at(self.decay, self.updates)
        for name, p in zip(self.names, self._params(model)):
            self.average[name].lerp_(p.detach().float(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the average into the model's parameters."""
        for name, p in zip(self.names, self._params(model)):
            p.copy_(self.average[name].to(p.dtype))

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the average inside the block and its own weights again after it."""
        own = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self._params(model), own):
                    p.copy_(w)

    def save(self, directory: str | os.PathLike) -> None:
        """`weight_average.safetensors` in `directory`, written atomically."""
        write_tensors(Path(directory) / FILE, self.average, {"updates": str(self.updates), "decay": repr(self.decay)})

    def load(self, directory: str | os.PathLike) -> None:
        """Read the average (and its update count) saved by `save` in `directory`."""
        path = Path(directory) / FILE
        tensors, metadata = read_tensors(path)
        updates = int(metadata.get("updates", "0"))
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise CheckpointError(f"the weight average '{path}' lacks {len(missing)} of the model's parameters",
                                  details=missing[:5], hint="it belongs to another model; start the run again")
        for name in self.names:
            self.average[name].copy_(tensors[name])
        self.updates = updates


class WeightAverageCallback(TrainerCallback):
    """Keeps a `WeightAverage` of the trainer's model: updated after each optimizer step, read back on
    resume, and left in the model when training ends (`SpikelmTrainer.save_model` writes it into each
    checkpoint, `SpikelmTrainer.evaluate` scores it)."""

    def __init__(self, trainer, decay: float):
        self.trainer = trainer
        self.decay = decay

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        average = WeightAverage(model, self.decay)
        if state.global_step > 0:  # resumed: the average saved with the checkpoint resumed from
            resumed = getattr(self.trainer, "resumed_from", None)  # the checkpoint resumed (maybe another run's)
            checkpoint = Path(resumed) if resumed else Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if not (checkpoint / FILE).is_file():
                raise CheckpointError(
                    f"'{checkpoint}' has no {FILE}, but this run averages its weights (train.weight_average)",
                    hint="resume with the settings the run started with, or start it again in a new out-dir",
                )
            average.load(checkpoint)
        self.trainer.weight_average = average

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.trainer.weight_average is not None:
            self.trainer.weight_average.update(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        average = self.trainer.weight_average
        if average is None:
            return
        if args.load_best_model_at_end and state.best_model_checkpoint is not None:
            average.load(state.best_model_checkpoint)
        average.copy_to(model)
        self.trainer.weight_average = None  # from here on the model is the average
