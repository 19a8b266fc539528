"""MAC counting (spikelm_core.energy.macs): exact counts against the hand formula, fvcore traps."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from spikelm_core.energy import (
    ENCODER_COMPONENTS,
    EnergyAuditError,
    bert_closed_form_macs,
    bert_layer_macs,
    count_macs,
)
from spikelm_core.errors import ConfigError

# Tiny, odd sizes: d = 24, 3 heads of 8, d_ff = 37, 2 layers, vocab 99, L = 7.
D, H, FF, LAYERS, VOCAB, L = 24, 3, 37, 2, 99, 7
# Hand formula, one layer at batch 1.
HAND_LAYER = {
    "q": L * D * D,  # 4032
    "k": L * D * D,
    "v": L * D * D,
    "o": L * D * D,
    "ffn1": L * D * FF,  # 6216
    "ffn2": L * FF * D,
    "qk": H * L * L * (D // H),  # 1176
    "av": H * L * L * (D // H),
}
HAND_ENCODER = LAYERS * sum(HAND_LAYER.values())  # 61824
HAND_POOLER = D * D  # 576

ATTN = [pytest.param("sdpa", id="sdpa"), pytest.param("eager", id="eager")]


def tiny_config(attn: str = "sdpa", **kwargs) -> BertConfig:
    return BertConfig(
        hidden_size=D,
        num_hidden_layers=LAYERS,
        num_attention_heads=H,
        intermediate_size=FF,
        vocab_size=VOCAB,
        attn_implementation=attn,
        **kwargs,
    )


def test_hand_layer_numbers():
    assert HAND_LAYER["q"] == 4032 and HAND_LAYER["ffn1"] == 6216 and HAND_LAYER["qk"] == 1176
    assert bert_layer_macs(D, H, FF, L) == HAND_LAYER
    assert bert_closed_form_macs(D, LAYERS, H, FF, L, pooler=False) == HAND_ENCODER == 61824
    assert bert_closed_form_macs(D, LAYERS, H, FF, L) == HAND_ENCODER + HAND_POOLER


def test_closed_form_bert_base():
    layer = bert_layer_macs(768, 12, 3072, 128)
    assert layer["q"] + layer["k"] + layer["v"] == 226_492_416
    assert layer["o"] == 75_497_472
    assert layer["ffn1"] == layer["ffn2"] == 301_989_888
    assert layer["qk"] == layer["av"] == 12_582_912
    assert sum(layer.values()) == 931_135_488
    assert bert_closed_form_macs(768, 12, 12, 3072, 128, pooler=False) == 11_173_625_856
    assert bert_closed_form_macs(768, 12, 12, 3072, 128) == 11_174_215_680
    assert bert_closed_form_macs(768, 12, 12, 3072, 512, pooler=False) == 48_318_382_080
    with pytest.raises(ValueError, match="seq_len"):
        bert_closed_form_macs(768, 12, 12, 3072, 0)


@pytest.mark.parametrize("attn", ATTN)
def test_tiny_bert_exact(attn):
    count = count_macs(BertModel(tiny_config(attn)), seq_len=L)
    assert count.attn_implementation == attn
    per_layer = count.by_layer()
    assert per_layer[0] == HAND_LAYER and per_layer[1] == HAND_LAYER
    assert per_layer[None] == {"pooler": HAND_POOLER}
    assert count.encoder_total == HAND_ENCODER
    assert count.total == HAND_ENCODER + HAND_POOLER == 62400
    assert count.closed_form_total == 62400
    assert count.num_timesteps == 1 and count.batch_size == 1
    assert {r.component for r in count.rows} == set(ENCODER_COMPONENTS) | {"pooler"}  # no LayerNorm, no "other"
    assert all(r.operand is None and r.steps == 1 and r.spiking is None for r in count.rows)
    # Q.K^T and probs.V are charged to attention.self in dense BERT and split into qk / av.
    qk = [r for r in count.rows if r.component == "qk" and r.layer == 0]
    assert [r.module for r in qk] == ["encoder.layer.0.attention.self"]
    assert qk[0].op == ("sdpa" if attn == "sdpa" else "matmul")


@pytest.mark.parametrize("attn", ATTN)
def test_tiny_bert_heads_and_batch(attn):
    cls_model = BertForSequenceClassification(tiny_config(attn, num_labels=2))
    count = count_macs(cls_model, seq_len=L)
    assert count.by_component()["head"] == D * 2
    assert count.total == HAND_ENCODER + HAND_POOLER + D * 2

    # fvcore counts the whole batch; rows are per sample.
    count5 = count_macs(cls_model, seq_len=L, batch_size=5)
    assert count5.rows == count.rows
    assert count5.fvcore_total == 5 * count.fvcore_total

    mlm = count_macs(BertForMaskedLM(tiny_config(attn)), seq_len=L)
    assert mlm.by_component()["head"] == L * D * D + L * D * VOCAB  # transform + decoder
    assert "pooler" not in mlm.by_component()
    assert mlm.closed_form_total == HAND_ENCODER


def test_layer_norm_excluded_by_default_and_optional():
    model = BertModel(tiny_config())
    assert "norm" not in count_macs(model, seq_len=L).by_component()
    with_norm = count_macs(model, seq_len=L, count_norm=True)
    # fvcore's 5 per element: embeddings + 2 per layer, each over L x d elements.
    assert with_norm.by_component()["norm"] == 5 * (1 + 2 * LAYERS) * L * D
    assert with_norm.encoder_total == HAND_ENCODER


def test_plain_fvcore_traps_still_there():
    """Documents the traps count_macs closes: plain fvcore drops SDPA and counts LayerNorm."""
    from fvcore.nn import FlopCountAnalysis

    model = BertModel(tiny_config("sdpa")).eval()
    ids = torch.ones(1, L, dtype=torch.long)
    plain = FlopCountAnalysis(model, (ids,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    plain.set_op_handle("aten::layer_norm", None)  # does NOT remove the default handle
    layer_norm = 5 * (1 + 2 * LAYERS) * L * D
    attention = LAYERS * (HAND_LAYER["qk"] + HAND_LAYER["av"])
    assert plain.total() == HAND_ENCODER + HAND_POOLER - attention + layer_norm
    assert "aten::scaled_dot_product_attention" in plain.unsupported_ops()


@pytest.mark.parametrize("attn", ATTN)
def test_bert_base_exact(attn):
    with torch.device("meta"):  # shapes only: no weights to initialise, fast trace
        model = BertModel(BertConfig(attn_implementation=attn))
    count = count_macs(model)  # 128 tokens, batch 1
    assert count.seq_len == 128
    assert count.encoder_total == 11_173_625_856
    assert count.component_total("pooler") == 589_824
    assert count.total == 11_174_215_680
    assert count.fvcore_total == 11_174_215_680


class _BaddbmmAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        return torch.baddbmm(torch.zeros(x.shape[0], x.shape[1], x.shape[1]), h, h.transpose(1, 2))


class _Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _BaddbmmAttention()

    def forward(self, x):
        return self.block(x)


def test_unsupported_matmul_fails_with_its_name():
    with pytest.raises(EnergyAuditError) as info:
        count_macs(_Outer(), inputs=(torch.randn(2, 5, 8),))
    err = info.value
    assert "aten::baddbmm" in err.message
    assert any("aten::baddbmm" in d and "'block'" in d for d in err.details)
    assert err.exit_code == 1 and err.hint


class _MysteryMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        return a @ b

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - never called
        raise NotImplementedError


class _UsesMystery(nn.Module):
    def forward(self, a, b):
        return _MysteryMatmul.apply(a, b)


def test_custom_autograd_function_outside_neuron_fails():
    with pytest.raises(EnergyAuditError, match=r"prim::PythonOp\._MysteryMatmul"):
        count_macs(_UsesMystery(), inputs=(torch.randn(3, 4), torch.randn(4, 5)))


@torch.library.custom_op("spikelm_test::mystery_mm", mutates_args=())
def _mystery_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


class _UsesCustomOp(nn.Module):
    def forward(self, a, b):
        return _mystery_mm(a, b)


def test_custom_library_op_fails():
    with pytest.raises(EnergyAuditError, match="spikelm_test::mystery_mm"):
        count_macs(_UsesCustomOp(), inputs=(torch.randn(3, 4), torch.randn(4, 5)))


def test_closed_form_mismatch_raises_with_both_numbers():
    model = BertModel(tiny_config())
    attention = model.encoder.layer[0].attention.self
    attention.query = nn.Sequential(attention.query, nn.Identity())  # q MACs now land in "other"
    with pytest.raises(EnergyAuditError) as info:
        count_macs(model, seq_len=L)
    assert f"{HAND_ENCODER + HAND_POOLER - HAND_LAYER['q']:,}" in info.value.message
    assert f"{HAND_ENCODER + HAND_POOLER:,}" in info.value.message
    relaxed = count_macs(model, seq_len=L, check_closed_form=False)
    assert relaxed.by_component()["other"] == HAND_LAYER["q"]


def test_bad_settings_are_config_errors():
    model = BertModel(tiny_config())
    with pytest.raises(ConfigError, match="seq_len"):
        count_macs(model, seq_len=0)
    with pytest.raises(ConfigError, match="batch_size"):
        count_macs(model, batch_size=-1)


def test_mode_is_restored():
    model = BertModel(tiny_config()).train()
    count_macs(model, seq_len=L)
    assert model.training


# --- spiking BERT (time-first; each spiking op has a `neuron` child) -------------------------


def spiking_config(**kwargs):
    from spikelm_core.models.spiking_bert import SpikingBertConfig

    values = dict(
        hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=H, intermediate_size=FF, vocab_size=VOCAB,
        num_timesteps=3,
    )
    values.update(kwargs)
    return SpikingBertConfig(**values)


@pytest.mark.parametrize("timesteps", [pytest.param(3, id="T3"), pytest.param(1, id="T1")])
def test_spiking_bert_per_step_counts(timesteps):
    from spikelm_core.models.spiking_bert import SpikingBertForSequenceClassification

    model = SpikingBertForSequenceClassification(spiking_config(num_timesteps=timesteps, num_labels=2))
    count = count_macs(model, seq_len=L)
    assert count.num_timesteps == timesteps
    assert count.by_layer()[1] == HAND_LAYER  # per step: the dense twin's numbers
    assert count.encoder_total == HAND_ENCODER and count.closed_form_total == HAND_ENCODER + HAND_POOLER
    # fvcore saw every encoder op T times; the pooler and head run once on the T-mean.
    assert count.fvcore_total == timesteps * HAND_ENCODER + HAND_POOLER + D * 2
    for row in count.rows:
        if row.component in ENCODER_COMPONENTS:
            assert row.spiking and row.operand == row.module + ".neuron" and row.steps == timesteps
        else:
            assert row.spiking is False and row.operand is None and row.steps == 1
    modules = {r.component: r.module for r in count.rows if r.layer == 0}
    assert modules["qk"] == "bert.encoder.layer.0.attention.self.qk"
    assert modules["av"] == "bert.encoder.layer.0.attention.self.av"
    assert count_macs(model, seq_len=L, batch_size=2).rows == count.rows


def test_spiking_bert_variants():
    from spikelm_core.models.spiking_bert import SpikingBertModel

    lif = count_macs(SpikingBertModel(spiking_config(neuron_kind="lif", levels="binary")), seq_len=L)
    assert lif.encoder_total == HAND_ENCODER and all(r.spiking for r in lif.rows if r.layer is not None)

    float_kv = count_macs(SpikingBertModel(spiking_config(spike_kv=False)), seq_len=L)
    attention = [r for r in float_kv.rows if r.component in ("qk", "av")]
    assert attention and all(r.spiking is False and r.operand is None for r in attention)
    assert float_kv.encoder_total == HAND_ENCODER

    with pytest.raises(ConfigError, match="batch_size"):
        count_macs(SpikingBertModel(spiking_config()), seq_len=L, batch_size=3)  # B == T is ambiguous


@pytest.mark.parametrize("kind, levels, binary", [("lif", "binary", True), ("elastic_bi", "ternary", False),
                                                  ("elastic_bi", "binary", True)])
def test_spike_width_of_the_memory_bounds_follows_the_neurons_declared_levels(kind, levels, binary):
    """A LIF neuron that never fired is still binary (1 bit per spike), a ternary one that fired only
    positive spikes still ternary (2 bits): the model says, not one firing pass."""
    from spikelm_core.energy.sweep import spikes_are_binary
    from spikelm_core.models.spiking_bert import SpikingBertModel

    model = SpikingBertModel(spiking_config(neuron_kind=kind, levels=levels))
    assert spikes_are_binary(model) is binary
    assert not spikes_are_binary(BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=16)))
