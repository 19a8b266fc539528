"""The run directory: one object owns a training run's lifecycle on disk.

`RunDirectory` takes the lock, resolves `--resume`, checks that a resumed run keeps its config,
seeds every generator, writes `run_config.yaml` (with one header that says how to replay the run),
provides the `metrics.jsonl` sink and times the run. Every training pipeline (GLUE, masked LM,
sequence-to-sequence) goes through it, so all run directories look alike:

    <out_dir>/run_config.yaml  metrics.jsonl  checkpoint-<step>/ ...  final/  .spikelm.lock (while running)
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import errno
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from ..config import diff_configs, load_config, save_config
from ..errors import CheckpointError, ConfigError
from ..io import check_output_location, process_alive, wrapped_os_error
from ..log import get_logger
from .callbacks import PRECISION_FILE, JsonlMetricsCallback, end_of_run, jsonl_record, read_metrics
from .results import Timer

log = get_logger("training")

LOCK_NAME = ".spikelm.lock"
RUN_CONFIG = "run_config.yaml"
METRICS = "metrics.jsonl"
FINAL = "final"
#: Fields that may differ between a run and its resumption (they do not change the numbers).
RESUME_MAY_CHANGE = (
    "out_dir", "data.data_dir", "train.logging_steps", "train.save_total_limit", "train.report_to",
    "train.num_workers", "train.eval_batch_size", "train.device",
)


#: ... and, in a masked-LM run (pretrain, distill on text), the held-out text it scores once, after
#: training: its training does not read it
MASKED_LM_RESUME_MAY_CHANGE = ("data.validation_file", "data.eval_subset")


def resume_may_change(cfg) -> tuple[str, ...]:
    """The settings (dotted prefixes) a resumed run of `cfg`'s kind may change."""
    masked_lm = getattr(cfg, "mlm", None) is not None and cfg.task is None
    return RESUME_MAY_CHANGE + (MASKED_LM_RESUME_MAY_CHANGE if masked_lm else ())


def changed_settings(old, new, may_change: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[tuple[str, Any, Any]]:
    """`(dotted key, old, new)` for each setting of run config `new` that would change the numbers of
    the run `old` describes: `may_change` left out (a resumed run passes `resume_may_change`: its
    held-out text too, which a sweep's table compares), and `train.bf16` compared as the precision it
    gives on this machine ('auto' is true where bf16 is native: `training/precision.py`)."""
    from .precision import run_device, uses_bf16

    return [(k, a, b) for k, a, b in diff_configs(old, new)
            if not k.startswith(may_change)
            and not (k == "train.bf16" and uses_bf16(a, run_device(old.train.device))
                     == uses_bf16(b, run_device(new.train.device)))]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def local_main_process_first():
    """Under torchrun or accelerate (WORLD_SIZE > 1) each node's first rank runs the block first and the
    others after it, e.g. a corpus tokenised into the datasets cache once and read back by the rest;
    a no-op in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().local_main_process_first():
        yield


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


class RunLock:
    """`<out_dir>/.spikelm.lock` holding `host pid` of the run that writes there (main process only).

    A lock of a process that is gone on this host is stale and taken over; a live one, or any lock
    written by another host (whose processes cannot be checked from here), refuses the directory.
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner_host, pid = _read_lock(self.path)
                other_host = owner_host is not None and owner_host != host
                if other_host or (pid is not None and pid != os.getpid() and process_alive(pid)):
                    where = f"host {owner_host}, pid {pid}" if other_host else f"pid {pid}"
                    raise ConfigError(
                        f"output directory '{self.path.parent}' is in use by another run ({where})",
                        details=[f"lock file: {self.path}"],
                        hint="wait for that run to finish, or choose another --out-dir; if no such run "
                        "exists, delete the lock file",
                    ) from None
                log.info("removing a stale lock %s (pid %s is not running)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{host} {os.getpid()}\n")
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _read_lock(path: Path) -> tuple[str | None, int | None]:
    """(host, pid) of a lock file; 0.1.0 locks hold the pid alone (host None: this host)."""
    try:
        parts = path.read_text().split()
    except OSError:
        return None, None
    try:
        if len(parts) == 1:
            return None, int(parts[0])
        return parts[0], int(parts[1])
    except (ValueError, IndexError):
        return None, None


def _cannot_write(exc: BaseException | None) -> bool:
    """Whether `exc` says the run's folder took no more writes (a full disk, a quota): the run can go on
    from its last checkpoint once there is room."""
    if exc is None:
        return False
    found = exc if isinstance(exc, OSError) else wrapped_os_error(exc)
    return found is not None and found.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def checkpoint_is_complete(path: Path) -> bool:
    """Whether a checkpoint-<step>/ was written to the end.

    The Trainer writes the weights, then optimizer, scheduler and RNG state, and `trainer_state.json`
    last: a checkpoint is complete once that file exists and parses. A kill or a full disk during a
    save leaves it absent or cut short."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(state, dict) and all(isinstance(state.get(key), int) for key in TRAINER_STATE_INTS)
            and not _missing_rank_states(path))


def _rank_states(folder: Path) -> list[int]:
    """The ranks whose rng_state_<rank>.pth a checkpoint of a multi-process run holds, sorted."""
    return sorted(int(p.stem.removeprefix("rng_state_")) for p in folder.glob("rng_state_*.pth")
                  if p.stem.removeprefix("rng_state_").isdigit())


def _missing_rank_states(folder: Path) -> list[str]:
    """rng_state_<rank>.pth files a multi-process checkpoint lacks: a gap in its ranks, or rank 0's alone (a
    one-process run writes rng_state.pth, so rng_state_0.pth means at least two processes)."""
    ranks = _rank_states(folder)
    if not ranks:
        return []
    expected = range(max(max(ranks) + 1, 2))
    return [f"rng_state_{rank}.pth" for rank in expected if rank not in ranks]


#: trainer_state.json's fields that resuming computes with (a file without them is not the Trainer's)
TRAINER_STATE_INTS = ("global_step", "train_batch_size")


def own_best_checkpoint(checkpoint: str | Path) -> str | None:
    """The best checkpoint that `checkpoint`'s trainer_state.json records, in the folder `checkpoint` is in.

    The Trainer records it as an absolute path: a run moved or copied since would take (copied) another
    run's best weights or (moved) none. The same checkpoint-<step>/ of this run is meant; None (warned) when
    this run no longer holds it, or when none is recorded."""
    folder = Path(checkpoint)
    try:
        best = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")).get("best_model_checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    if not best:
        return None
    here = folder.parent / Path(best).name
    if here.is_dir():
        return str(here)
    if is_main_process():
        log.warning("the best checkpoint the resumed state records, %s, is not in %s: the run ends without it "
                    "(its last weights, or their average)", Path(best).name, folder.parent)
    return None


def last_complete_checkpoint(out_dir: Path) -> str | None:
    """The complete checkpoint-<step>/ of `out_dir` with the highest step; incomplete ones later
    than it are skipped with a warning (they are what a kill during a save leaves)."""
    steps = []
    for child in out_dir.iterdir() if out_dir.is_dir() else ():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            steps.append((int(name[len("checkpoint-"):]), child))
    for _, path in sorted(steps, reverse=True):
        if checkpoint_is_complete(path):
            return str(path)
        if is_main_process():
            log.warning("skipping the incomplete checkpoint %s (its save did not finish)", path)
    return None


def finished_step(out_dir: Path) -> int | None:
    """The step a finished run in `out_dir` ended at (its final/ and the final scores metrics.jsonl
    records as it ends), or None for a run that has not finished."""
    if not (out_dir / FINAL).is_dir():
        return None
    steps = [r["step"] for r in read_metrics(out_dir / METRICS) if isinstance(r.get("step"), int) and end_of_run(r)]
    return max(steps) if steps else None


def _refuse_training_a_finished_run_again(out_dir: Path, last: str | None) -> None:
    """`--resume auto` on a finished run whose latest checkpoint is older than its end (a `keep_best`
    run keeps the best one) would train the last steps again and replace final/: refused."""
    end = finished_step(out_dir)
    at = steps_of_checkpoint(last) if last is not None else None
    if end is None or (at is not None and at >= end):
        return
    raise ConfigError(
        f"'{out_dir}' holds a finished run (final/, step {end}); its latest checkpoint is "
        f"{Path(last).name if last else 'gone'}, so --resume auto would train "
        f"{'steps ' + str(at + 1) + '-' + str(end) if at is not None else 'it'} again and replace final/",
        hint=f"evaluate it (spikelm eval {out_dir / FINAL} ...), or give another --out-dir to train again")


def resolve_resume(resume: str | None, out_dir: Path) -> str | None:
    """`never` -> None (refusing a directory with checkpoints); `auto` -> the latest complete
    checkpoint-<step>/ in `out_dir` or None; anything else must be a complete checkpoint directory."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume in (None, "", "never"):
        if out_dir.is_dir() and get_last_checkpoint(str(out_dir)) is not None:
            end = finished_step(out_dir)
            raise ConfigError(
                f"'{out_dir}' already holds checkpoints of an earlier run"
                + (f", which finished (final/, step {end})" if end is not None else ""),
                hint=f"evaluate it (spikelm eval {out_dir / FINAL} ...), or choose another --out-dir"
                if end is not None else "pass --resume auto to continue it, or choose another --out-dir",
            )
        return None
    if resume == "auto":
        last = last_complete_checkpoint(out_dir)
        _refuse_training_a_finished_run_again(out_dir, last)
        if is_main_process() and last is None:  # a checkpoint found is said once the run's config is checked
            log.info("--resume auto: no checkpoint in %s, starting fresh", out_dir)
        return last
    path = Path(resume)
    if not path.exists() and "/" not in resume and os.sep not in resume:  # a mistyped word, not a path
        close = difflib.get_close_matches(resume, ["auto", "never"], n=1)
        raise ConfigError(f"--resume {resume!r}: expected auto, never or a checkpoint directory"
                          + (f" (did you mean {close[0]!r}?)" if close else ""),
                          hint="--resume auto continues from the run's latest checkpoint; a checkpoint is "
                          "named by its path, e.g. runs/sst2/checkpoint-500")
    if not path.exists():
        raise CheckpointError(f"--resume '{resume}' is neither auto, never nor an existing directory",
                              hint="give a checkpoint-<step>/ directory of an earlier run, or --resume auto")
    missing = _missing_rank_states(path)
    if missing and (path / "trainer_state.json").is_file():  # its state file is there: name what is not
        raise CheckpointError(
            f"cannot resume from '{resume}': it lacks {', '.join(missing)} (another process's random state; "
            "its save did not finish on every rank)",
            hint="resume from an earlier checkpoint of the run, or --resume auto (which skips this one)",
        )
    if not checkpoint_is_complete(path):
        raise CheckpointError(
            f"'{resume}' is not a Trainer checkpoint, or its save did not finish (no readable trainer_state.json)",
            hint="give a checkpoint-<step>/ directory of an earlier run, or --resume auto",
        )
    return str(path)


#: The Trainer's own resume state in a checkpoint-<step>/ (besides the safetensors weights)
TRAINER_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_*.pth")


def check_resume_state(checkpoint: str) -> None:
    """Read the Trainer's resume state files as the Trainer will (`torch.load(weights_only=True)`:
    tensors and plain containers only, never code) and turn a damaged or foreign file into a
    CheckpointError naming it, before the run starts."""
    import torch
    from transformers.trainer_pt_utils import safe_globals  # the numpy RNG types the Trainer allows too

    folder = Path(checkpoint)
    lacking = [name for name in ("optimizer.pt", "scheduler.pt") if not (folder / name).is_file()]
    if processes_of_checkpoint(folder) is None:
        lacking.append("rng_state.pth")
    if lacking:  # the Trainer would go on without them in silence: a fresh optimizer, warmup and data order
        raise CheckpointError(
            f"cannot resume from '{folder}': it lacks {', '.join(lacking)}",
            details=["spikelm saves the optimizer, the schedule and the random state with every checkpoint; "
                     "without them the run would not continue as it stopped (an interrupted copy?)"],
            hint="resume from an earlier checkpoint (--resume DIR), or start a new run in another --out-dir",
        )
    for pattern in TRAINER_STATE_FILES:
        for path in sorted(folder.glob(pattern)):
            try:
                with safe_globals():
                    torch.load(path, weights_only=True, map_location="cpu")
            except Exception as exc:  # unpickling refused, truncated zip, not a torch file
                raise CheckpointError(
                    f"cannot resume from '{folder}': '{path.name}' is damaged or holds more than tensors",
                    details=[f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"],
                    hint="resume from an earlier checkpoint (--resume DIR), or start a new run in another "
                    "--out-dir; spikelm never loads such a file with weights_only=False",
                ) from None


def processes_of_checkpoint(checkpoint: str | Path) -> int | None:
    """How many processes saved `checkpoint`: the Trainer writes rng_state.pth for one and
    rng_state_<rank>.pth for each of several; None when it holds neither."""
    folder = Path(checkpoint)
    ranks = _rank_states(folder)
    if ranks:
        return max(ranks) + 1
    return 1 if (folder / "rng_state.pth").is_file() else None


def warn_if_resumed_at_another_scale(checkpoint: str, args) -> None:
    """A run resumed with another number of processes takes other batches from the checkpoint on (the
    global batch is per-device batch x processes x accumulation): it no longer ends as the run it
    continues would have. Warned, not refused: on purpose it is a way to move a run."""
    saved = processes_of_checkpoint(checkpoint)
    now = int(args.world_size)
    if saved is None or saved == now or not is_main_process():
        return
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    log.warning("%s was saved by a run of %d process(es), global batch %d; this one has %d, global batch %d: "
                "the steps from here see other batches (and epochs end at other steps) than the run it continues "
                "would have", Path(checkpoint).name, saved, saved * per_step, now, now * per_step)


def warn_if_resumed_at_another_precision(checkpoint: str, precision: str) -> None:
    """A run resumed in another precision than its checkpoint's steps (`train.bf16: auto` on other cores:
    bf16 where they have bf16 instructions, float32 elsewhere) no longer ends as the run it continues would
    have. Warned, not refused, like another process count; checkpoints saved before this record say nothing."""
    try:
        saved = json.loads((Path(checkpoint) / PRECISION_FILE).read_text(encoding="utf-8")).get("precision")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(saved, str) and saved != precision and is_main_process():
        log.warning("%s was trained in %s and this run continues in %s (train.bf16 'auto' follows the cores: "
                    "bf16 where they have bf16 instructions): the steps from here compute otherwise than the run "
                    "it continues would have", Path(checkpoint).name, saved, precision)


def check_resume_weights(checkpoint: str, model) -> None:
    """Refuse, before training, a checkpoint whose weights cannot be read or do not fit `model` (a
    checkpoint of another run or model), naming the first mismatches; the Trainer would otherwise fail
    with a traceback after the data is prepared. Neuron state (set by calibration) is not compared."""
    from ..checkpoints import is_neuron_state, read_shapes

    saved = read_shapes(checkpoint)     # the headers only: the Trainer reads the tensors themselves
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    foreign = [key for key in saved if not is_neuron_state(key) and key not in own]
    shapes = [f"{key}: {saved[key]} saved, {own[key]} in the model"
              for key in saved if key in own and not is_neuron_state(key) and saved[key] != own[key]]
    if foreign or shapes:
        raise CheckpointError(
            f"cannot resume from '{checkpoint}': its weights do not fit this run's model",
            details=(shapes + [f"not in the model: {key}" for key in foreign])[:5],
            hint="resume from a checkpoint of this run (--resume auto), or start a new run in another --out-dir",
        )


def steps_of_checkpoint(path: str | None) -> int | None:
    if path is None:
        return None
    state = json.loads((Path(path) / "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


def default_out_dir(cfg, command: str) -> Path:
    """The recipe's out_dir, else runs/<command>-<task> (runs/<command> without a task)."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    return Path("runs") / (f"{command}-{cfg.task}" if cfg.task else command)


#: The settings an evaluation of a run's model takes from that run when it leaves them unset: the
#: lengths its inputs are cut to and how its summaries are generated (`settings_of_run`)
RUN_SETTINGS_FOR_EVAL = ("data.max_length", "data.seq_len", "data.stride", "data.max_tokens", "generate.num_beams",
                         "generate.max_new_tokens", "generate.min_new_tokens", "generate.length_penalty",
                         "generate.no_repeat_ngram_size")
#: ... and those a masked-LM run's model (pretrain, or distill on text) takes when it is scored on a
#: language-modelling task's text: as the run scored its held-out text (data.validation_file; on
#: that file, data.eval_subset too)
MLM_RUN_SETTINGS_FOR_EVAL = ("data.max_length", "mlm.mlm_probability", "mlm.nsp")


def run_of_model(model: str | os.PathLike[str]) -> Path | None:
    """The run directory a saved model belongs to: `<run>/final` or `<run>/checkpoint-<step>` beside
    a `run_config.yaml`; None for any other model."""
    path = Path(model)
    if not path.is_dir() or not (path.name == FINAL or path.name.startswith("checkpoint-")):
        return None
    return path.parent if (path.parent / RUN_CONFIG).is_file() else None


def task_of_run(model: str | os.PathLike[str], task: str | None = None, *,
                data_given: bool = False) -> tuple[str, list[str]] | None:
    """(the task, `-s` settings of its data) of the training run `model` belongs to, for an eval that
    names no task, or names the run's own (`task`): `spikelm eval runs/sst2/final` scores the run's task on
    the run's data (GLUE: its data.source and data.data_dir; summarisation: those, its validation file and
    columns; both: its data.eval_subset, the dev examples its final scores read, unless `data_given`;
    wikitext2: the text its final perplexity read; a masked-LM run, pretrain or distill on text:
    wikitext2, the masked-LM scores, on its held-out text). None for another model, another task than
    `task`, a masked-LM run without held-out text or an unreadable run config. `data_given`: the caller
    reads other data (`--data-dir`) and drops the data settings; the log line then names the task alone."""
    import json

    import yaml

    from ..config.schema import normalize_task, task_family

    asked = None if task is None else (normalize_task(task) or task)
    run = run_of_model(model)
    if run is None:
        return None
    held_out = held_out_of_run(model)
    if held_out is not None and asked not in (None, "wikitext2"):
        return None
    if held_out is not None:  # a masked-LM run (pretrain, distill on text): its held-out text, as it scored it
        if data_given:
            log.info("a masked-LM run (%s): masked-token scores on the text of --data-dir", run / RUN_CONFIG)
        else:
            log.info("a masked-LM run: scored on its held-out text %s (data.validation_file of %s; --task and "
                     "--data-dir choose others)", held_out, run / RUN_CONFIG)
        return "wikitext2", [f"data.data_dir={json.dumps(str(held_out))}"]
    try:
        data = (yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) or {}).get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    if not isinstance(task, str):
        return None
    try:
        family = task_family(normalize_task(task))
    except Exception:  # a hand-edited run config: eval says what is wrong with its own checks
        return None
    if asked is not None and asked != (normalize_task(task) or task):
        return None
    keys = {"summarization": ("source", "data_dir", "validation_file", "text_column", "summary_column")}.get(
        family, ("source", "data_dir"))
    taken = {key: data[key] for key in keys if isinstance(data.get(key), str)}
    if family == "lm" and isinstance(data.get("validation_file"), str):
        taken = {"source": data["validation_file"]}  # the text the run's final perplexity read
    sets = [f"data.{key}={json.dumps(value)}" for key, value in taken.items()]
    subset = data.get("eval_subset")
    if family != "lm" and isinstance(subset, int) and not isinstance(subset, bool) and not data_given:
        sets.append(f"data.eval_subset={subset}")  # the dev examples its final scores read (LM: settings_of_run)
    if family == "lm":  # the split its final perplexity scored (eval's own default is test)
        from ..data.lm import TRAINING_EVAL_SPLIT

        sets.append(f"splits={json.dumps([TRAINING_EVAL_SPLIT])}")
    if data_given:
        log.info("task %s from the run's %s, on the data of --data-dir", task, run / RUN_CONFIG)
    else:
        log.info("task %s and its data from the run's %s (--task and --data-dir choose others)", task,
                 run / RUN_CONFIG)
    return task, sets


def settings_of_run(cfg):
    """`cfg` (an evaluation config) with the `RUN_SETTINGS_FOR_EVAL` it leaves unset taken from the
    training run its model comes from, when that run trained on the same task: so `spikelm eval
    runs/x/final` cuts and generates as the run's own evaluations did (an XSum run at 512 tokens and
    4 beams is not scored at the 128-token default), and a dense run's model (a teacher) is scored
    dense, not converted, unless `neuron` is set. A masked-LM run's model scored on a
    language-modelling task takes `MLM_RUN_SETTINGS_FOR_EVAL` instead, so it scores text as its run
    scored the held-out text. Logs what it took; `cfg` unchanged otherwise."""
    import yaml

    from ..config import TASK_CONFIGS
    from ..config.schema import normalize_task

    run = run_of_model(cfg.model) if cfg.task is not None else None
    if run is None:
        return cfg
    try:
        command = (yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) or {}).get("command")
        run_cfg = load_config(TASK_CONFIGS[command], run / RUN_CONFIG, [])
    except ConfigError as exc:  # e.g. a run config an older spikelm wrote, with a setting its task never read
        log.warning("the run's %s does not load (%s%s): its lengths and generation settings (%s) are not taken, "
                    "this eval uses its own (set them with -s if the run's differed)", run / RUN_CONFIG, exc.message,
                    "".join(f"; {line}" for line in exc.details[:3]),
                    ", ".join(RUN_SETTINGS_FOR_EVAL))
        return cfg
    except Exception as exc:  # an unreadable or foreign run config: evaluate with this config as it is
        log.debug("not reading %s: %s", run / RUN_CONFIG, exc)
        return cfg
    masked = run_cfg.task is None and getattr(run_cfg, "mlm", None) is not None and cfg.task_family == "lm"
    if not masked and (run_cfg.task is None or normalize_task(run_cfg.task) != normalize_task(cfg.task)):
        return cfg
    taken: list[str] = []
    sections = {}
    keys = MLM_RUN_SETTINGS_FOR_EVAL if masked else RUN_SETTINGS_FOR_EVAL
    if masked and _scores_held_out_text(cfg, run_cfg):  # the run's held-out text: as many sequences as it scored
        keys = (*keys, "data.eval_subset")
    elif not masked and cfg.task_family == "lm" and _scores_run_validation(cfg, run_cfg):
        keys = (*keys, "data.eval_subset")  # a causal LM's own validation text: as many windows as the run scored
    for key in keys:
        section, name = key.split(".")
        mine = sections.get(section, getattr(cfg, section))
        value = getattr(getattr(run_cfg, section), name)
        if name in mine.model_fields_set or getattr(mine, name) == value:
            continue
        sections[section] = mine.model_copy(update={name: value})
        taken.append(f"{key} {value}")
    generate = sections.get("generate")
    if generate is not None and generate.min_new_tokens > generate.max_new_tokens:
        # the run's shortest summary, above the longest this eval allows: the eval's own minimum
        sections["generate"] = generate.model_copy(update={"min_new_tokens": cfg.generate.min_new_tokens})
        taken = [item for item in taken if not item.startswith("generate.min_new_tokens")]
    generate = sections.get("generate")
    if generate is not None and generate.min_new_tokens > generate.max_new_tokens:
        # this eval's own minimum (-s generate.min_new_tokens) above the run's longest summary, taken here:
        # say so now, naming both keys, rather than after the model is loaded
        raise ConfigError(
            f"generate.min_new_tokens {generate.min_new_tokens} exceeds generate.max_new_tokens "
            f"{generate.max_new_tokens}, taken from the run's {run / RUN_CONFIG}",
            hint=f"-s generate.max_new_tokens={generate.min_new_tokens} (or more), or a smaller generate.min_new_tokens",
        )
    if run_cfg.neuron.kind == "dense" and cfg.neuron is None:  # a dense run (a teacher) is scored dense
        from ..neurons.settings import NeuronSettings

        sections["neuron"] = NeuronSettings(kind="dense")
        taken.append("neuron.kind dense")
    if not taken:
        return cfg
    log.info("from the run's %s: %s (set them to change)", run / RUN_CONFIG, ", ".join(taken))
    return cfg.model_copy(update=sections)


def held_out_of_run(model: str | os.PathLike[str] | None) -> Path | None:
    """The held-out text (data.validation_file) of the masked-LM run `model` belongs to, else None."""
    import yaml

    run = run_of_model(model) if model is not None else None
    if run is None:
        return None
    try:
        saved = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) or {}
        data = saved.get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    held_out = data.get("validation_file") if isinstance(data, dict) else None
    if data.get("task") is not None or saved.get("command") not in ("pretrain", "distill") or not isinstance(held_out, str):
        return None
    return Path(held_out).expanduser()


def same_place(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    """Whether two paths name one file or folder (relative, absolute, `.`, a trailing slash, links)."""
    if not a or not b:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def _scores_held_out_text(cfg, run_cfg) -> bool:
    """Whether evaluation `cfg` reads the text file that masked-LM run `run_cfg` held out (its
    data.validation_file, `pretrain --held-out`)."""
    return same_place(cfg.data.data_dir or cfg.data.source, run_cfg.data.validation_file)  # what the eval reads


def _scores_run_validation(cfg, run_cfg) -> bool:
    """Whether causal-LM evaluation `cfg` scores the text causal-LM run `run_cfg`'s final perplexity read:
    its data.validation_file, else the valid split of its data.data_dir / data.source."""
    from ..data.lm import TRAINING_EVAL_SPLIT, normalize_lm_task

    def local(source):  # a task name (wikitext2, the hub's text) reads as no local text
        return None if source is None or normalize_lm_task(source) is not None else source

    text, run = cfg.data.data_dir or local(cfg.data.source), run_cfg.data
    if run.validation_file:
        return same_place(text, run.validation_file)
    run_text = run.data_dir or local(run.source)
    return list(cfg.splits or ()) == [TRAINING_EVAL_SPLIT] and (text == run_text or same_place(text, run_text))


_CONTINUE_WITH: contextvars.ContextVar[str | None] = contextvars.ContextVar("continue_with", default=None)


@contextlib.contextmanager
def continue_with(instruction: str):
    """Runs inside say `instruction` instead of their own replay command when stopped (a sweep's
    point: the sweep's command again, which also records the point in the sweep's table)."""
    token = _CONTINUE_WITH.set(instruction)
    try:
        yield
    finally:
        _CONTINUE_WITH.reset(token)


def with_glue_dir(cfg):
    """`cfg` with the GLUE root it reads from $GLUE_DIR written as its data.data_dir (a GLUE run that
    sets none), so that its run_config.yaml replays on the same data without the variable."""
    data, glue_dir = getattr(cfg, "data", None), os.environ.get("GLUE_DIR")
    if not glue_dir or getattr(cfg, "task_family", None) != "glue" or data is None or data.data_dir is not None:
        return cfg
    return cfg.model_copy(update={"data": data.model_copy(update={"data_dir": str(Path(glue_dir).resolve())})})


def launcher() -> str:
    """How this process was started, as the start of a command that runs it again: `spikelm`, or under
    torchrun (WORLD_SIZE > 1) `torchrun --nproc-per-node N -m spikelm_cli` (across nodes with `--nnodes`
    and a placeholder for the rendezvous options, which the environment does not tell), so that a
    continued run keeps its processes and global batch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return "spikelm"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    nodes = (f"--nnodes {world // local} <the rendezvous options it was started with> "
             if local and world // local > 1 else "")
    return f"torchrun {nodes}--nproc-per-node {local} -m spikelm_cli"


def replay_header(command: str, out_dir: Path) -> str:
    """The comment atop run_config.yaml: what wrote it and how to replay or continue the run."""
    return (f"Resolved config of a `spikelm {command}` run; replay or continue it with:\n"
            f"  {launcher()} {command} {out_dir / RUN_CONFIG} --resume auto")


class RunDirectory:
    """A training run's directory, used as a context manager around the whole run.

    On entry: lock, resolve `resume`, check a resumed run's config, seed. `write_config()` writes
    run_config.yaml (call it once the inputs are known to be good); `metrics_callback()` is the
    metrics.jsonl sink; `append_metrics()` adds a record after training. On exit the lock goes.
    """

    def __init__(self, cfg, command: str, resume: str | None):
        self.cfg = cfg
        self.command = command
        self.resume = resume
        self.out_dir = default_out_dir(cfg, command)
        self.final_dir = self.out_dir / FINAL
        self.timer = Timer()
        self.resume_from: str | None = None
        self._lock = RunLock(self.out_dir)

    def __enter__(self) -> "RunDirectory":
        self._check_contents()
        self._created = not self.out_dir.exists()
        # the folders above out_dir that this run creates too (removed with it when the run is refused)
        self._new_parents = [p for p in self.out_dir.absolute().parents if not p.exists()]
        self._config_written = False
        self._lock.acquire()
        try:
            self.resume_from = resolve_resume(self.resume, self.out_dir)
            if self.resume_from is not None:
                check_resume_state(self.resume_from)
            self._check_resumed_config()
            if self.resume_from is not None and is_main_process():
                log.info("resuming from %s", self.resume_from)
            seed_everything(self.cfg.train.seed)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc_value=None, *exc) -> None:
        self._lock.release()
        if exc_type is not None and self._config_written and is_main_process() and (
                issubclass(exc_type, KeyboardInterrupt) or _cannot_write(exc_value)):
            self._say_how_to_continue()
        if exc_type is not None and self._created and not self._config_written and is_main_process():
            # refused before anything was written: leave no empty run directory behind, nor the empty
            # folders created above it
            shutil.rmtree(self.out_dir, ignore_errors=True)
            for parent in self._new_parents:  # nearest first; one that holds something else stays
                try:
                    parent.rmdir()
                except OSError:
                    break

    def _say_how_to_continue(self) -> None:
        """After Ctrl-C or SIGTERM: the command that continues the run, and from which checkpoint."""
        last = last_complete_checkpoint(self.out_dir)
        where = (f"from {Path(last).name}" if last is not None else
                 "from the start: no checkpoint was saved yet; train.save_steps sets how often")
        how = _CONTINUE_WITH.get() or f"{launcher()} {self.command} {self.out_dir / RUN_CONFIG} --resume auto"
        log.warning("stopped; continue with: %s (%s)", how, where)

    def _check_contents(self) -> None:
        """Refuse a directory that holds files of something other than a spikelm run, and one that
        holds an earlier run unless it is being resumed. The main process checks (the other ranks
        would see its files)."""
        if not is_main_process():
            return
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"the run directory '{self.out_dir}' is a file", hint="choose another --out-dir")
        check_output_location(self.out_dir)
        if not self.out_dir.exists():
            return
        names = sorted(p.name for p in self.out_dir.iterdir() if p.name != LOCK_NAME)
        if not names:
            return
        if RUN_CONFIG not in names:
            raise ConfigError(
                f"the run directory '{self.out_dir}' is not empty and holds no spikelm run",
                details=[f"found: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"],
                hint="choose another --out-dir (a run never writes into a directory of other files)",
            )
        if self.resume in (None, "", "never") and not any(n.startswith("checkpoint-") for n in names):
            raise ConfigError(
                f"'{self.out_dir}' holds an earlier run ({', '.join(names[:4])})",
                hint="it finished (final/): choose another --out-dir" if FINAL in names else
                "it saved no checkpoint, so nothing is left to continue: --resume auto starts afresh here (its "
                "run_config.yaml and metrics.jsonl replaced), or choose another --out-dir",
            )

    def _check_resumed_config(self) -> None:
        saved = self.out_dir / RUN_CONFIG
        if self.resume_from is None or not saved.is_file():
            return
        old = load_config(type(self.cfg), saved, [])
        changed = changed_settings(old, self.cfg, resume_may_change(self.cfg))
        if changed:
            raise ConfigError(
                "the resumed run's config differs from the one it started with",
                details=[f"{k}: {a!r} in {saved}, now {b!r}" for k, a, b in changed],
                hint="resume with the same recipe and overrides, or start a new run in another --out-dir; "
                f"these may change: {', '.join(resume_may_change(self.cfg))}",
            )
        # a data folder may move with the run (another machine, another mount); other data would change the run
        for key, before, now in diff_configs(old, with_glue_dir(self.cfg)):
            if key == "data.data_dir" and not same_place(before, now) and is_main_process():
                log.warning("data.data_dir was %s when the run started and is %s now: the steps from here read "
                            "the files there; if they are not the same data, start a new run in another --out-dir",
                            before, now)

    def write_config(self) -> None:
        """run_config.yaml with the run directory written out (absolute), so that a replay from any
        folder continues this run; a GLUE run's data read from $GLUE_DIR has that folder written as its
        data.data_dir, so that a replay without the variable reads the same data."""
        self._config_written = True
        if is_main_process():
            cfg = with_glue_dir(self.cfg.model_copy(update={"out_dir": str(self.out_dir.resolve())}))
            save_config(cfg, self.out_dir / RUN_CONFIG, header=replay_header(self.command, self.out_dir))

    def metrics_callback(self) -> JsonlMetricsCallback:
        return JsonlMetricsCallback(self.out_dir / METRICS, resume_step=steps_of_checkpoint(self.resume_from))

    def append_metrics(self, record: dict) -> None:
        if is_main_process():
            with (self.out_dir / METRICS).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(jsonl_record(record)) + "\n")
