"""`train.bf16: auto`: bf16 only where the device computes it natively, decided and logged once."""

from __future__ import annotations

import pytest
import torch

from spikelm_core.config import load_config
from spikelm_core.config.schema import FinetuneConfig
from spikelm_core.training import precision
from spikelm_core.training.args import training_arguments
from spikelm_core.training.precision import native_bf16, precision_name, resolve_bf16, run_device


@pytest.fixture
def cpu(monkeypatch):
    """Pretend this CPU has the given bf16 instructions ('amx', 'avx512_bf16'; none: neither)."""

    def have(*features: str, probes: bool = True):
        native_bf16.cache_clear()
        resolve_bf16.cache_clear()
        if probes:
            monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: "amx" in features, raising=False)
            monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: "avx512_bf16" in features,
                                raising=False)
        else:  # an older or newer torch without the private probes: the kernel's flags decide
            monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
            flags = {"fpu", "avx2", *("amx_bf16" if f == "amx" else f for f in features)}
            monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)

    yield have
    native_bf16.cache_clear()
    resolve_bf16.cache_clear()


@pytest.mark.parametrize("probes", [True, False])
def test_native_bf16_names_the_instructions(cpu, probes):
    cpu(probes=probes)
    assert native_bf16("cpu") is None
    cpu("avx512_bf16", probes=probes)
    assert native_bf16("cpu") == "AVX512-BF16"
    cpu("amx", "avx512_bf16", probes=probes)
    assert native_bf16("cpu") == "AMX"


def test_auto_is_bf16_only_where_native_and_says_so(cpu, caplog):
    cpu()
    with caplog.at_level("INFO", logger="spikelm"):
        assert resolve_bf16("auto", "cpu") is False
    assert "train.bf16: auto -> float32 (this CPU has no AMX or AVX512-BF16)" in caplog.text
    cpu("amx")
    caplog.clear()
    with caplog.at_level("INFO", logger="spikelm"):
        assert resolve_bf16("auto", "cpu") is True
        assert resolve_bf16("auto", "cpu") is True  # decided once per process: logged once
    assert caplog.text.count("train.bf16: auto -> bf16 (this CPU has AMX)") == 1


def test_explicit_settings_are_kept_and_emulated_bf16_warns(cpu, caplog):
    cpu()
    with caplog.at_level("WARNING", logger="spikelm"):
        assert resolve_bf16(False, "cpu") is False
        assert not caplog.text
        assert resolve_bf16(True, "cpu", "eval") is True  # as asked, with a warning
    assert "eval.bf16 is true on a CPU without bf16 instructions" in caplog.text
    assert "set eval.bf16 to auto" in caplog.text
    cpu("avx512_bf16")
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):
        assert resolve_bf16(True, "cpu") is True
    assert not caplog.text


def test_the_trainer_gets_the_resolved_precision(cpu, tmp_path):
    for features, expected in (((), False), (("amx",), True)):
        cpu(*features)
        cfg = load_config(FinetuneConfig, None, ["model=m", "data.task=sst2", "train.bf16=auto", "train.device=cpu"])
        assert cfg.train.bf16 == "auto"
        assert training_arguments(cfg.train, tmp_path).bf16 is expected


def test_names_and_devices():
    assert [precision_name(True), precision_name(False, True), precision_name(False)] == ["bf16", "fp16", "float32"]
    assert run_device("cpu") == "cpu"
    assert run_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_resumes_a_run_saved_with_the_precision_it_gives_here(cpu):
    """A run (or a finished sweep point) saved with `bf16: true` continues under 'auto' where bf16 is
    native, and is refused where 'auto' would switch it to float32."""
    from spikelm_core.training.rundir import changed_settings

    def cfg(*overrides):
        return load_config(FinetuneConfig, None, ["model=m", "data.task=sst2", "train.device=cpu", *overrides])

    saved, now = cfg("train.bf16=true"), cfg("train.bf16=auto")
    cpu("avx512_bf16")
    assert changed_settings(saved, now) == []
    cpu()
    assert changed_settings(saved, now) == [("train.bf16", True, "auto")]
    assert changed_settings(cfg("train.bf16=false"), now) == []
    assert changed_settings(cfg("train.seed=1"), cfg("train.seed=2", "train.logging_steps=7")) == [("train.seed", 1, 2)]


def test_activation_checkpointing_keeps_ddp_looking_for_unused_parameters(tmp_path):
    """The Trainer turns DDP's search for unused parameters off once checkpointing is on; a hidden-state-only
    distillation leaves the classifier unused, and DDP then failed at the second step (torchrun, 2 ranks)."""
    for on, expected in ((False, None), (True, True)):
        cfg = load_config(FinetuneConfig, None, ["model=m", "data.task=sst2", "train.device=cpu",
                                                 f"train.activation_checkpointing={str(on).lower()}"])
        args = training_arguments(cfg.train, tmp_path)
        assert (args.activation_checkpointing, args.ddp_find_unused_parameters) == (on, expected)
