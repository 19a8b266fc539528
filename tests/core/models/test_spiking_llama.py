"""Spiking Llama: placement, Auto round trip, the dense model at T=1 without neurons, grouped-query
attention, cached = uncached decoding (greedy and sampling)."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel

import spikelm_core  # noqa: F401  (registers the Auto classes)
from spikelm_core.calibration import calibrate, is_calibrated
from spikelm_core.firing import measure_firing
from spikelm_core.models.common import SharedInputProjections, SpikeLinear, SpikeMatmul
from spikelm_core.models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM, SpikingLlamaModel
from spikelm_core.models.spiking_llama.modeling_spiking_llama import SpikingLlamaAttention
from spikelm_core.neurons import BiSpikeNeuron, SpikingNeuron, TernarySpike

from tests.conftest import LLAMA_TINY


def tiny(**kw):
    return SpikingLlamaConfig(**{**LLAMA_TINY, "num_timesteps": 3, **kw})


def batch(B=5, L=7, seed=0, pad_first=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, LLAMA_TINY["vocab_size"], (B, L), generator=g)
    mask = torch.ones_like(ids)
    if pad_first:  # left padding, as batched generation pads
        ids[0, :pad_first] = 0
        mask[0, :pad_first] = 0
    return {"input_ids": ids, "attention_mask": mask}


def calibrated(seed=1, **kw) -> SpikingLlamaForCausalLM:
    torch.manual_seed(seed)
    m = SpikingLlamaForCausalLM(tiny(**kw)).eval()
    calibrate(m, batch(seed=seed))
    return m


class PassThrough(SpikingNeuron):
    """A neuron that lets its input through: with it, a spiking layer computes the dense one."""

    def forward(self, x):
        return x


def test_config_round_trip_and_auto_classes(tmp_path):
    m = calibrated(k=3.0)
    m.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is SpikingLlamaConfig and config.model_type == "spiking_llama"
    assert (config.num_key_value_heads, config.head_dim, config.num_timesteps, config.k) == (1, 8, 3, 3.0)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is SpikingLlamaForCausalLM and is_calibrated(loaded)
    assert type(AutoModel.from_pretrained(tmp_path)) is SpikingLlamaModel
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**b).logits, m(**b).logits, rtol=0, atol=0)


def test_bad_config_values_name_the_fields():
    with pytest.raises(Exception, match="num_key_value_heads"):
        tiny(num_key_value_heads=2)
    with pytest.raises(Exception, match="num_timesteps"):
        tiny(num_timesteps=0)


def test_neurons_before_every_projection_and_on_k_and_v():
    m = SpikingLlamaForCausalLM(tiny())
    layer = m.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        assert isinstance(lin, SpikeLinear) and isinstance(lin.neuron, BiSpikeNeuron)
    for mm in (attn.qk, attn.av):
        assert isinstance(mm, SpikeMatmul) and isinstance(mm.neuron, TernarySpike)
    assert len({id(lin.neuron) for lin in (attn.q_proj, attn.k_proj, attn.v_proj)}) == 3
    assert attn.q_proj.out_features == 24 and attn.k_proj.out_features == attn.v_proj.out_features == 8  # GQA
    # float: embeddings, norms, rotary embedding, LM head
    assert type(m.lm_head) is torch.nn.Linear and type(m.model.embed_tokens) is torch.nn.Embedding
    assert len(m.spiking_neurons()) == 9 * LLAMA_TINY["num_hidden_layers"]
    names = [n for n, _ in m.spiking_neurons()]
    assert names[:9] == [f"model.layers.0.{p}.neuron" for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn.qk",
        "self_attn.av", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def test_parameter_names_equal_hf_llama():
    for tie in (False, True):
        dense = LlamaForCausalLM(LlamaConfig(**LLAMA_TINY, tie_word_embeddings=tie))
        spiking = SpikingLlamaForCausalLM(tiny(tie_word_embeddings=tie))
        keys = {k for k in spiking.state_dict() if not k.endswith((".alpha", ".calibrated"))}
        assert keys == set(dense.state_dict())
        assert (spiking.lm_head.weight is spiking.model.embed_tokens.weight) == tie
    assert {k for k in SpikingLlamaModel(tiny()).state_dict() if not k.endswith((".alpha", ".calibrated"))} == set(
        LlamaModel(LlamaConfig(**LLAMA_TINY)).state_dict())


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_without_neurons_at_one_step_it_is_the_dense_llama(impl, monkeypatch):
    """A strong structural check: with T=1 and every neuron letting its input through, the spiking
    model computes exactly transformers' LlamaForCausalLM (RoPE, GQA, RMSNorm, SiLU gate, masks)."""
    monkeypatch.setattr(SpikingLlamaAttention, "attention_impl", impl)
    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(**LLAMA_TINY, attn_implementation="eager")).eval()
    spiking = SpikingLlamaForCausalLM(tiny(num_timesteps=1)).eval()
    spiking.load_state_dict(dense.state_dict(), strict=False)
    for module in spiking.modules():
        if isinstance(module, (SpikeLinear, SpikeMatmul)):
            module.neuron = PassThrough()
    b = batch(pad_first=3)
    with torch.no_grad():
        d, s = dense(**b, output_hidden_states=True), spiking(**b, output_hidden_states=True)
    want, got = d.logits, s.logits
    torch.testing.assert_close(got[1:], want[1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0, 3:], want[0, 3:], rtol=1e-5, atol=1e-5)  # real tokens of the padded row
    # hidden states entry for entry (the last one after the final norm), as hidden-state distillation compares them
    assert len(s.hidden_states) == len(d.hidden_states) == LLAMA_TINY["num_hidden_layers"] + 1
    for got_h, want_h in zip(s.hidden_states, d.hidden_states):
        torch.testing.assert_close(got_h[1:], want_h[1:], rtol=1e-5, atol=1e-5)


def test_forward_shapes_loss_and_gradients():
    m = SpikingLlamaForCausalLM(tiny()).train()
    b = batch()
    out = m(**b, labels=b["input_ids"], output_hidden_states=True)
    assert out.logits.shape == (5, 7, 101) and out.cache is None
    assert len(out.hidden_states) == LLAMA_TINY["num_hidden_layers"] + 1
    out.loss.backward()
    grad = m.model.layers[0].self_attn.k_proj.weight.grad.clone()
    assert grad.abs().sum() > 0 and m.model.layers[0].mlp.gate_proj.weight.grad.abs().sum() > 0
    m.zero_grad()
    m.model.gradient_checkpointing = True  # recomputes each layer in the backward: same loss and gradients
    again = m(**b, labels=b["input_ids"])
    again.loss.backward()
    torch.testing.assert_close(again.loss, out.loss)
    torch.testing.assert_close(m.model.layers[0].self_attn.k_proj.weight.grad, grad)
    spikes = m.model(**b, output_spike_states=True).spike_states
    assert spikes.shape == (3, 5, 7, 24)


def test_readout_last_normalises_the_last_step():
    torch.manual_seed(0)
    m = SpikingLlamaModel(tiny(readout="last")).eval()
    b = batch()
    calibrate(m, b)
    out = m(**b, output_spike_states=True)
    torch.testing.assert_close(out.last_hidden_state, m.norm(out.spike_states[-1]))
    m.config.readout = "mean"
    torch.testing.assert_close(m(**b).last_hidden_state, m.norm(out.spike_states.mean(0)))


def test_fused_and_reference_attention_agree(monkeypatch):
    m = calibrated(seed=4)
    b = batch(pad_first=2)
    outs = {}
    for impl in ("fused", "reference"):
        monkeypatch.setattr(SpikingLlamaAttention, "attention_impl", impl)
        with torch.no_grad():
            outs[impl] = m(**b, use_cache=False).logits
    torch.testing.assert_close(outs["fused"], outs["reference"], atol=1e-5, rtol=1e-5)


def test_shared_spike_passes_equal_separate_projections():
    m = calibrated(seed=6)
    b = batch()
    with torch.no_grad():
        shared = m(**b, use_cache=False).logits
        layer = m.model.layers[0]
        assert layer.self_attn.sharing("qkv") and layer.mlp.sharing("gate_up")  # one pass for q/k/v, one for gate/up
        for module in m.modules():
            if isinstance(module, SharedInputProjections):
                module.share_input_spikes = False
        apart = m(**b, use_cache=False).logits
    torch.testing.assert_close(shared, apart, atol=1e-5, rtol=1e-5)


def test_incremental_decoding_equals_full_forward():
    m = calibrated(seed=2)
    ids = batch(seed=3)["input_ids"]
    with torch.no_grad():
        full = m(ids, use_cache=False).logits
        out = m(ids[:, :4], use_cache=True)
        steps, cache = [out.logits], out.cache
        for i in range(4, ids.shape[1]):
            out = m(ids[:, i : i + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["greedy", "sampling", "beams"])
def test_generate_with_and_without_cache_gives_same_tokens(mode):
    m = calibrated(seed=7)
    b = batch(seed=8, pad_first=2)
    kw = dict(max_new_tokens=6, min_new_tokens=6, pad_token_id=0, eos_token_id=2)
    kw.update({"greedy": dict(do_sample=False), "sampling": dict(do_sample=True, top_k=0, temperature=1.0),
               "beams": dict(do_sample=False, num_beams=2)}[mode])
    torch.manual_seed(11)
    with_cache = m.generate(**b, use_cache=True, **kw)
    torch.manual_seed(11)
    without = m.generate(**b, use_cache=False, **kw)
    assert with_cache.shape == (5, 13)
    assert torch.equal(with_cache, without)


def test_firing_counts_every_neuron_with_grouped_kv_heads():
    m = calibrated(seed=9)
    report = measure_firing(m, [batch(seed=10, pad_first=3)])
    assert not report.missing and len(report.neurons) == 18
    assert all(0 < report.rate(n) < 1 for n in report.neurons)
    kv = report.neurons["model.layers.1.self_attn.qk.neuron"]  # [T, B, H_kv, L, d_h], pads excluded
    assert kv.total == 3 * (5 * 7 - 3) * 1 * 8 and kv.kind == "ternary"


@pytest.mark.slow
def test_compiled_layers_equal_eager():
    """`compile_layers` runs each decoder layer as one graph (without a cache: a cached step is eager)."""
    import torch._dynamo

    from spikelm_core.models.common import compile_layers

    eager = calibrated(seed=12)
    compiled = SpikingLlamaForCausalLM(tiny()).eval()
    compiled.load_state_dict(eager.state_dict())
    b = batch(seed=13, pad_first=2)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert compile_layers(compiled) == LLAMA_TINY["num_hidden_layers"]
    with torch.no_grad():
        want, got = eager(**b, use_cache=False).logits, compiled(**b, use_cache=False).logits
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph serves every layer
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        cached = compiled.generate(b["input_ids"], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(cached, eager.generate(b["input_ids"], max_new_tokens=3, do_sample=False, pad_token_id=0))


@pytest.mark.parametrize("alloc", [
    {"salient_fraction": 0.1, "salient_mode": "steps", "salient_steps": 3},
    {"salient_fraction": 0.1, "salient_mode": "float"},
    {"k_candidates": [1.0, 2.0, 3.0]},
], ids=["steps", "float", "per-layer-k"])
def test_outlier_aware_allocation_saves_loads_and_decodes_exactly(alloc, tmp_path):
    m = calibrated(seed=2, **alloc)
    linear_neurons = [lin.neuron for lin in m.modules() if isinstance(lin, SpikeLinear)]
    if "salient_fraction" in alloc:
        # each linear layer's own mask: q/k/v (24 inputs) get 2 salient channels, down (40) 4
        assert [int(n.salient.sum()) for n in linear_neurons[:7]] == [2, 2, 2, 2, 2, 2, 4]
    else:
        assert {float(n.k_chosen) for n in linear_neurons} <= {1.0, 2.0, 3.0}
    m.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    b = batch(seed=4)
    with torch.no_grad():
        assert torch.equal(loaded(**b).logits, m(**b).logits)
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=2)
    assert torch.equal(m.generate(**b, use_cache=True, **kw), m.generate(**b, use_cache=False, **kw))


@pytest.mark.parametrize("tie", [True, False])
def test_a_tied_lm_head_is_ignored_on_save_so_a_resume_ties_it_again(tmp_path, tie):
    from safetensors.torch import load_file

    model = SpikingLlamaForCausalLM(tiny(tie_word_embeddings=tie))
    model.save_pretrained(tmp_path)
    fresh = SpikingLlamaForCausalLM(tiny(tie_word_embeddings=tie))
    missing = set(fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False).missing_keys)
    assert missing == fresh._keys_to_ignore_on_save == ({"lm_head.weight"} if tie else set())


@pytest.mark.parametrize("family", ["llama", "bert", "bart"])
def test_gradient_checkpointing_on_an_uncalibrated_model_equals_plain_backward(family):
    """The first training step of a fresh model calibrates inside the forward (and its shared projections
    run apart meanwhile): checkpointing must not recompute that step, which torch refuses."""
    from spikelm_core.models.common import CompilableLayer
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification

    def fresh():
        torch.manual_seed(0)
        if family == "llama":
            return SpikingLlamaForCausalLM(tiny()).train()
        if family == "bart":  # the encoder and the decoder stacks, dropout on (the recomputation replays it)
            from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
            from tests.core.models.test_spiking_bart import BART_TINY

            return SpikingBartForConditionalGeneration(SpikingBartConfig(
                **{**BART_TINY, "vocab_size": 101, "num_timesteps": 3, "dropout": 0.1})).train()
        cfg = SpikingBertConfig(vocab_size=101, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, num_timesteps=3)
        return SpikingBertForSequenceClassification(cfg).train()

    b = batch()
    labels = b["input_ids"] if family in ("llama", "bart") else torch.arange(5) % 2
    grads = []
    for checkpointing in (False, True):
        m = fresh()
        if checkpointing:
            m.activation_checkpointing_enable()
            assert m.is_activation_checkpointing
        calls = []
        for step in range(2):  # the calibrating step, then a recomputed one
            torch.manual_seed(1)
            m.zero_grad()
            if step == 1:  # every layer runs twice (the forward, the recomputation) when checkpointed
                layers = [mod for mod in m.modules() if isinstance(mod, CompilableLayer)]
                hooks = [layer.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in layers]
            m(**b, labels=labels).loss.backward()
        for hook in hooks:
            hook.remove()
        assert len(calls) == len(layers) * (2 if checkpointing else 1)
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_a_cache_passed_in_training_is_read_and_filled_with_activation_checkpointing():
    """Training mode, activation checkpointing on, a prefix then its continuation through one cache: a
    layer that reads a cache is not recomputed (the cache would be written twice), so the cache is kept
    and the continuation's logits and gradients equal those without checkpointing."""
    from transformers import DynamicCache

    ids = torch.randint(4, LLAMA_TINY["vocab_size"], (2, 8), generator=torch.Generator().manual_seed(0))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        m = SpikingLlamaForCausalLM(tiny(attention_dropout=0.0)).eval()
        with torch.no_grad():
            m(input_ids=ids)  # calibrates
        m.train()
        if checkpointing:
            m.activation_checkpointing_enable()
        cache = DynamicCache(config=m.config)
        m(input_ids=ids[:, :4], past_key_values=cache, use_cache=True)
        out = m(input_ids=ids[:, 4:], past_key_values=cache, use_cache=True)
        out.logits.sum().backward()
        results.append((cache.get_seq_length(), out.logits.detach(),
                        {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (plain_len, plain_logits, plain_grads), (len_, logits, grads) = results
    assert plain_len == len_ == 8
    torch.testing.assert_close(logits, plain_logits)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], msg=name)


def test_return_dict_false_gives_the_tuple_and_attention_maps_are_refused():
    torch.manual_seed(0)
    model = SpikingLlamaForCausalLM(tiny()).eval()
    b = batch()
    with torch.no_grad():
        out = model(**b, use_cache=False)
        as_tuple = model(**b, use_cache=False, return_dict=False)
        base = model.model(**b, use_cache=False, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(base, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)
    with pytest.raises(ValueError, match="attention maps"):
        model(**b, output_attentions=True)


def test_a_left_padded_row_scores_as_it_does_alone():
    """K is spiked after RoPE, so the spiking model is not invariant to shifting every position (a dense
    Llama is): positions must count real tokens, or batched generation depends on the padding."""
    m = calibrated(seed=5, initializer_range=0.3)
    ids = batch(B=1, L=5, seed=6)["input_ids"]
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(ids)], 1)
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=2)
    with torch.no_grad():
        alone = m(ids).logits
        torch.testing.assert_close(m(padded, attention_mask=mask).logits[:, 4:], alone, atol=1e-5, rtol=1e-5)
        assert torch.equal(m.generate(padded, attention_mask=mask, **kw)[:, 9:], m.generate(ids, **kw)[:, 5:])
