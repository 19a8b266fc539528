"""Which precision a run computes in: `train.bf16` / `eval.bf16` (true, false or 'auto') made concrete.

bf16 autocast pays only where the hardware computes bf16 natively. On a CPU without bf16
instructions torch emulates it, and a spiking MiniLM training step (T = 4, 16 x 128 tokens) took
140 s in bf16 against 5.3 s in float32 on 2 AVX2 cores (`benchmarks/bench.py --only precision`,
README, Performance), where cores with AMX or AVX512-BF16 halve the float32 step. 'auto' picks bf16
on such hardware and float32 elsewhere; an explicit `true` on a CPU without bf16 instructions runs
as asked, with a warning.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..log import get_logger

log = get_logger("training")


def run_device(device: str) -> str:
    """The device type a `device` setting ('auto', 'cpu', 'cuda') runs on here."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def native_bf16(device_type: str) -> str | None:
    """Why `device_type` ('cpu' or 'cuda') computes bf16 natively, in words ('AMX', 'AVX512-BF16',
    'CUDA'), or None when it does not (bf16 would be emulated, or unsupported)."""
    if device_type == "cuda":
        return "CUDA" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if device_type != "cpu":
        return None
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own probes (private API;
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # without them, the kernel's flags)
    if amx is not None and avx is not None:
        return "AMX" if amx() else "AVX512-BF16" if avx() else None
    flags = _cpu_flags()
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def uses_bf16(setting: bool | str, device_type: str) -> bool:
    """Whether `bf16` = `setting` (true, false or 'auto') autocasts to bf16 on `device_type`: 'auto'
    where bf16 is native there. `resolve_bf16` is this with its log lines."""
    return native_bf16(device_type) is not None if setting == "auto" else bool(setting)


@functools.cache
def resolve_bf16(setting: bool | str, device_type: str, section: str = "train") -> bool:
    """Whether a run on `device_type` autocasts to bf16 for `<section>.bf16` = `setting` (logged once
    per process: 'auto' says what it chose, `true` without native bf16 warns)."""
    native = native_bf16(device_type)
    if setting == "auto":
        if device_type == "cpu":
            where = f"this CPU has {native}" if native else "this CPU has no AMX or AVX512-BF16"
        else:
            where = f"this {device_type} device supports bf16" if native else f"this {device_type} device has no bf16"
        log.info("%s.bf16: auto -> %s (%s)", section, "bf16" if native else "float32", where)
    elif setting and native is None and device_type == "cpu":
        log.warning("%s.bf16 is true on a CPU without bf16 instructions (AMX or AVX512-BF16): torch emulates "
                    "bf16, and a spiking MiniLM training step measured 26x the float32 time on such cores; "
                    "set %s.bf16 to auto (bf16 only where it is native) or false", section, section)
    return uses_bf16(setting, device_type)


def precision_name(bf16: bool, fp16: bool = False) -> str:
    """'bf16', 'fp16' or 'float32': what a run's matmuls compute in (RunResult.precision)."""
    return "bf16" if bf16 else "fp16" if fp16 else "float32"
