"""Side-by-side benchmark: dense vs spiking models on this machine (CPU, or `--device cuda`), one run, ratios in JSON.

    python benchmarks/bench.py --compile-dense      # everything, MiniLM shape (6 x 384), batch 16 x 128
    python benchmarks/bench.py --only default-path  # one section (repeatable)
    python benchmarks/bench.py --exec neurons --neuron-impl fast --only explicit   # the eager path
    python benchmarks/bench.py --only precision --timesteps 4   # bf16 autocast against float32
    python benchmarks/bench.py --only checkpointing --timesteps 4   # activation checkpointing: time and memory
    python benchmarks/bench.py --quick              # tiny shapes (a smoke run: a few minutes on 2 cores)

Measures, in one process and one run so the ratios compare like with like:
- default path: `spikelm convert minilm -T T`, then the saved model (1) as loaded
  (`from_pretrained`, trained in a plain loop: its layers' own compile policy) and (2) as a recipe
  with default settings runs it (`train.compile: auto` for a long run);
- explicit modes: spiking BERT built here with `--exec layers` (`compile_layers`, static shapes)
  or `--exec neurons` (eager layers, `--neuron-impl`);
- for each: training step (forward + backward + AdamW), `train_step_ratio_over_T` = (spiking step /
  dense step) / T, whose floor is 1.0; inference throughput (tokens/s) under torch.inference_mode;
  activation memory, the bytes autograd saves for backward in one training forward (exact and
  repeatable on CPU, where allocator peaks are not observable);
- the eager ("fast") and compiled neuron against the reference loop on [4, 16, 128, 1536];
- precision: bf16 autocast against float32 for a spiking training step (no dropout, fused AdamW),
  with attention fwd+bwd by SDPA and by plain ops in both, and AdamW's loop against its fused kernel;
- checkpointing: a spiking training step with `train.activation_checkpointing` against one without,
  its time and the bytes kept for the backward (the checkpointed layers' inputs included);
- the wall time of `spikelm energy --k 2 3 4`;
- BART-base generation throughput (greedy and beam 4, KV cache), dense against spiking T=4, eager
  and compiled.
The dense model is Hugging Face BERT, eager, as users run it; `--compile-dense` also measures it
under torch.compile, for a second ratio. Times are medians over repeated steps after warm-up.
Training steps (and inference forwards) of the dense and the spiking model alternate, and each ratio is the median of the
per-pair ratios, so that drift in the machine's speed (other processes, thermal limits) cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
import transformers  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

transformers.utils.logging.disable_progress_bar()

import spikelm_core  # noqa: E402
from spikelm_core.calibration import calibrate  # noqa: E402
from spikelm_core.models.common import SharedInputProjections, compile_layers, set_compile_policy  # noqa: E402
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification  # noqa: E402
from spikelm_core.neurons import BiSpikeNeuron, set_neuron_impl  # noqa: E402

SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96),
}


#: where models and batches live (`--device`); timings synchronise with the device when it is not the CPU
DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_times(fn_a, fn_b, warmup: int, repeat: int) -> tuple[float, float, float]:
    """(median time of a, median time of b, median of the per-pair ratios b / a), a and b alternating."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), statistics.median(b / a for a, b in zip(ta, tb))


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {
        "input_ids": torch.randint(1000 % vocab, vocab, (batch, seq), generator=g),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch,), generator=g),
    }
    return {k: v.to(DEVICE) for k, v in out.items()}


def build(kind: str, shape: dict, T: int | None, neuron_impl: str = "compiled", share: bool = True):
    torch.manual_seed(0)
    common = dict(vocab_size=30522, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **shape)
    if kind == "dense":
        return BertForSequenceClassification(BertConfig(**common)).to(DEVICE)
    model = SpikingBertForSequenceClassification(SpikingBertConfig(num_timesteps=T, **common)).to(DEVICE)
    set_neuron_impl(model, neuron_impl)
    for m in model.modules():
        if isinstance(m, SharedInputProjections):
            m.share_input_spikes = share
    return model


def train_step_fn(model, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step():
        model.train()  # an inference measurement in between may have left it in eval mode
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()

    return step


def saved_activation_bytes(model, batch) -> int:
    """Bytes autograd saves for backward during one training forward (deduplicated by storage)."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except RuntimeError:
            pass
        return t

    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    del loss
    return sum(n for ptr, n in seen.items() if ptr not in params)


def kept_activation_bytes(model, batch) -> int:
    """`saved_activation_bytes`, with the inputs that activation checkpointing keeps for each recomputed
    layer (they are held by `torch.utils.checkpoint`, not saved through autograd's hooks)."""
    import torch.utils.checkpoint as tuc

    inputs: dict[int, int] = {}
    real = tuc.checkpoint

    def counting(fn, *args, **kwargs):
        for t in args:
            if isinstance(t, torch.Tensor):
                inputs[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return real(fn, *args, **kwargs)

    tuc.checkpoint = counting
    try:
        saved = saved_activation_bytes(model, batch)
    finally:
        tuc.checkpoint = real
    return saved + sum(inputs.values())


def checkpointing_bench(shape: dict, T: int, batch: dict, warmup: int, repeat: int) -> dict:
    """`train.activation_checkpointing` (each layer recomputed in the backward) against keeping the
    activations: a spiking training step (compiled layers, as a recipe trains) of two models with the
    same weights, alternating; the bytes kept for the backward by each."""
    torch._dynamo.reset()
    plain = build("spiking", shape, T)
    calibrate(plain, batch)
    recomputed = build("spiking", shape, T)
    recomputed.load_state_dict(plain.state_dict())
    calibrate(recomputed, batch)
    recomputed.load_state_dict(plain.state_dict())  # the same amplitudes too
    for model in (plain, recomputed):
        compile_layers(model)
    recomputed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    a, b, r = paired_times(train_step_fn(plain, batch), train_step_fn(recomputed, batch), warmup + 1, repeat)
    kept, kept_ckpt = kept_activation_bytes(plain, batch), kept_activation_bytes(recomputed, batch)
    out = {"T": T, "plain_step_s": a, "checkpointed_step_s": b, "step_ratio": r, "plain_bytes": kept,
           "checkpointed_bytes": kept_ckpt, "memory_ratio": kept_ckpt / kept}
    print(f"activation checkpointing, spiking T={T}: step {a:.3f} s -> {b:.3f} s ({r:.2f}x), kept for the backward "
          f"{kept / 2**20:.1f} MiB -> {kept_ckpt / 2**20:.1f} MiB ({kept_ckpt / kept:.3f}x)", file=sys.stderr)
    return out


def inference_fn(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def fwd():
        model.eval()  # a training step in between leaves it in train mode
        with torch.inference_mode():
            model(**inputs)

    return fwd


def inference_tokens_per_s(model, batch, warmup, repeat) -> float:
    return batch["input_ids"].numel() / median_time(inference_fn(model, batch), warmup, repeat)


def paired_inference(dense, model, batch, warmup, repeat) -> tuple[float, float, float]:
    """(dense tokens/s, spiking tokens/s, median of the per-pair throughput ratios spiking / dense),
    the two forwards alternating like the training steps, so that drift in the machine's speed cancels."""
    dense_s, model_s, ratio = paired_times(inference_fn(dense, batch), inference_fn(model, batch), warmup, repeat)
    tokens = batch["input_ids"].numel()
    return tokens / dense_s, tokens / model_s, 1 / ratio


def neuron_speedup(shape=(4, 16, 128, 1536), warmup=1, repeat=3) -> dict:
    """Forward + backward of one elastic bi-spiking neuron: each implementation against the reference,
    the reference and the implementation alternating (`paired_times`), as the model ratios are."""
    x = torch.randn(*shape, device=DEVICE)
    n = BiSpikeNeuron(shape[0]).to(DEVICE)
    n(x)  # calibrate
    g = torch.randn(*shape, device=DEVICE)

    def run(impl):
        def f():
            n.impl = impl
            xi = x.detach().requires_grad_()
            n(xi).backward(g)

        return f

    out: dict = {"shape": list(shape)}
    for impl in ("fast", "compiled"):
        ref_s, impl_s, ratio = paired_times(run("reference"), run(impl), warmup + (1 if impl == "compiled" else 0),
                                            repeat)
        out.setdefault("reference_s", ref_s)
        out[f"{impl}_s"] = impl_s
        out[f"speedup_{impl}"] = 1 / ratio
    return out


def precision_bench(shape: dict, T: int, batch: dict, warmup: int, repeat: int) -> dict:
    """bf16 autocast against float32, and what makes it pay on CPU, each pair alternating:

    - attention fwd+bwd on the spiking model's folded shapes [T*B, H, L, d] without dropout:
      `F.scaled_dot_product_attention` against the plain ops (`math_attention`), in float32 and in bf16;
    - AdamW over the model's parameters: torch's per-tensor loop against its fused kernel;
    - a training step of the spiking model (T, no dropout, as the distillation template trains it; compiled
      layers, fused AdamW): float32 against bf16 autocast."""
    from spikelm_core.models.common import math_attention
    from spikelm_core.training.precision import native_bf16

    native = native_bf16(DEVICE.type)
    out = {"native_bf16": native}  # 'AMX', 'AVX512-BF16', 'CUDA', or None: bf16 emulated
    if native is None:
        print(f"no native bf16 on this {DEVICE.type}: torch emulates it (a bf16 MiniLM step takes minutes; "
              f"--warmup 1 --repeat 2 keeps this section short)", file=sys.stderr)
    B, L = batch["input_ids"].shape
    H = shape["num_attention_heads"]
    d = shape["hidden_size"] // H
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(T * B, 1, 1, L, device=DEVICE)
    mask[..., L * 3 // 4:] = torch.finfo(torch.float32).min  # a quarter of padding
    for dtype in (torch.float32, torch.bfloat16):
        qkv = [torch.randn(T * B, H, L, d, generator=g).to(DEVICE, dtype).requires_grad_() for _ in range(3)]
        m = mask.to(dtype)
        grad = torch.randn(T * B, H, L, d, generator=g).to(DEVICE, dtype)

        def sdpa():
            torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(*qkv, attn_mask=m), qkv, grad)

        def plain():
            torch.autograd.grad(math_attention(*qkv, m), qkv, grad)

        a, b, r = paired_times(sdpa, plain, warmup, repeat)
        name = "fp32" if dtype == torch.float32 else "bf16"
        out[f"attention_{name}"] = {"sdpa_s": a, "plain_s": b, "plain_over_sdpa": r}
        print(f"attention fwd+bwd {name} [{T * B}, {H}, {L}, {d}]: SDPA {a * 1e3:.1f} ms, plain ops {b * 1e3:.1f} ms "
              f"(plain/SDPA {r:.2f})", file=sys.stderr)

    torch._dynamo.reset()
    model = build("spiking", shape, T, share=True)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    calibrate(model, batch)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    loop, fused = torch.optim.AdamW(params, lr=1e-5, foreach=False), torch.optim.AdamW(params, lr=1e-5, fused=True)
    a, b, r = paired_times(loop.step, fused.step, warmup, repeat)
    out["adamw"] = {"loop_s": a, "fused_s": b, "fused_over_loop": r}
    print(f"AdamW step: loop {a * 1e3:.1f} ms, fused {b * 1e3:.1f} ms (fused/loop {r:.2f})", file=sys.stderr)

    compile_layers(model, dynamic=True)
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def step(bf16: bool):
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()

    a, b, r = paired_times(lambda: step(False), lambda: step(True), warmup + 1, repeat)
    out["train_step"] = {"T": T, "fp32_s": a, "bf16_s": b, "bf16_over_fp32": r}
    print(f"spiking T={T} training step: fp32 {a:.3f} s, bf16 autocast {b:.3f} s (bf16/fp32 {r:.2f})", file=sys.stderr)
    return out


BART_SHAPES = {
    "bart-base": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
    "tiny": dict(d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96),
}


def generation_bench(shape_name: str, T: int, batch: int, src_len: int, new_tokens: int, repeat: int) -> dict:
    """Tokens generated per second with the KV cache, greedy and beam 4, of dense BART and of
    spiking BART at T (eager, and with compiled encoder and decoder layers): forced lengths
    (min_new_tokens = max_new_tokens), the same random source batch, medians of `repeat` calls
    after one warm-up call (which compiles)."""
    from transformers import BartConfig, BartForConditionalGeneration

    from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration

    common = dict(vocab_size=50265, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
                  eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None, forced_bos_token_id=None,
                  **BART_SHAPES[shape_name])
    g = torch.Generator().manual_seed(0)
    src = {"input_ids": torch.randint(4, 50265, (batch, src_len), generator=g).to(DEVICE),
           "attention_mask": torch.ones(batch, src_len, dtype=torch.long, device=DEVICE)}
    torch.manual_seed(0)
    dense = BartForConditionalGeneration(BartConfig(**common)).to(DEVICE).eval()
    spiking = SpikingBartForConditionalGeneration(SpikingBartConfig(num_timesteps=T, **common)).to(DEVICE).eval()
    spiking.model.load_state_dict(dense.model.state_dict(), strict=False)
    calibrate(spiking, src)
    out: dict = {"shape": shape_name, "T": T, "batch": batch, "source_len": src_len, "new_tokens": new_tokens}

    def rate(model, beams: int) -> float:
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, do_sample=False,
                  use_cache=True, early_stopping=False)

        def gen():
            with torch.inference_mode():
                model.generate(**src, **kw)

        return batch * new_tokens / median_time(gen, 1, repeat)

    for beams, name in ((1, "greedy"), (4, "beam4")):
        d = rate(dense, beams)
        e = rate(spiking, beams)
        out[name] = {"dense_tokens_per_s": d, "spiking_eager_tokens_per_s": e, "eager_ratio_times_T": e / d * T}
    compile_layers(spiking)
    for beams, name in ((1, "greedy"), (4, "beam4")):
        c = rate(spiking, beams)
        out[name]["spiking_compiled_tokens_per_s"] = c
        out[name]["compiled_ratio_times_T"] = c / out[name]["dense_tokens_per_s"] * T
        print(f"BART {shape_name} generation, {name}: dense {out[name]['dense_tokens_per_s']:.1f} tok/s, spiking "
              f"T={T} eager {out[name]['spiking_eager_tokens_per_s']:.1f} (x T / dense "
              f"{out[name]['eager_ratio_times_T']:.2f}), compiled {c:.1f} ({out[name]['compiled_ratio_times_T']:.2f})",
              file=sys.stderr)
    return out


def default_path_bench(timesteps, batch, dense, dense_mem: int, dense_train, dense_compiled_s, warmup: int, repeat: int,
                       workdir: Path) -> dict:
    """The default path, measured as users take it: `spikelm convert minilm -T T` saves a spiking
    model; (1) "as_loaded": `AutoModelForSequenceClassification.from_pretrained` of that folder,
    trained as it loads (the layers' own compile policy, "auto"); (2) "recipe": the same folder
    as a recipe with default settings runs it (`train.compile: auto` for a run long enough to
    compile: dynamic-shape compiled layers). Each paired with the eager dense model, and against
    the compiled dense model where measured."""
    from transformers import AutoModelForSequenceClassification

    from spikelm_core.models.common import CompilableLayer
    from spikelm_core.training.pipeline import AUTO_COMPILE_MIN_STEPS, compile_if_asked

    out: dict = {}
    for T in timesteps:
        folder = workdir / f"minilm-spiking-T{T}"
        if not (folder / "config.json").exists():  # this interpreter's spikelm (the checkout's, not another install's)
            subprocess.run([sys.executable, "-m", "spikelm_cli", "convert", "minilm", "--out", str(folder), "-T", str(T), "--format", "json"],
                           check=True, capture_output=True, text=True)
        per: dict = {}
        for mode in ("as_loaded", "recipe"):
            torch._dynamo.reset()  # each mode compiles as in a process of its own
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).to(DEVICE)
            if mode == "recipe":
                compile_if_asked(model, "auto", work=AUTO_COMPILE_MIN_STEPS)
            dense_now, step, ratio = paired_times(dense_train, train_step_fn(model, batch), warmup + 1, repeat)
            compiled = all(m._compiled is not None for m in model.modules() if isinstance(m, CompilableLayer))
            dense_tps, tps, tps_ratio = paired_inference(dense, model, batch, warmup + 1, repeat)
            mem = saved_activation_bytes(model, batch)
            per[mode] = {
                "compiled_layers": compiled,
                "train_step_s": step,
                "dense_train_step_s": dense_now,
                "train_step_ratio_over_T": ratio / T,
                "train_step_ratio_over_T_vs_compiled_dense": None if dense_compiled_s is None else step / dense_compiled_s / T,
                "inference_throughput_ratio_times_T": tps_ratio * T,
                "activation_memory_ratio_over_T": mem / dense_mem / T,
            }
            print(f"default path T={T}, {mode} ({'compiled' if compiled else 'eager'} layers): step {step:.3f} s "
                  f"against dense {dense_now:.3f} s (ratio/T {ratio / T:.3f}), inference x T / dense "
                  f"{tps_ratio * T:.2f}, activations {mem / dense_mem / T:.2f} x T x dense",
                  file=sys.stderr)
            del model
        out[str(T)] = per
    return out


def energy_wall_time() -> float | None:
    """Wall time of `spikelm energy --k 2 3 4` run by this interpreter; None (with the reason on stderr)
    when the command fails."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "spikelm_cli", "energy", "--k", "2", "3", "4", "--format", "json"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(f"spikelm energy failed (exit {res.returncode}); energy_command_s is null: "
              f"{(res.stderr.strip().splitlines() or [''])[-1]}", file=sys.stderr)
        return None
    return time.perf_counter() - t0


#: the harness's sections besides the dense model (`--only`)
SECTIONS = ("default-path", "explicit", "neuron", "precision", "checkpointing", "energy", "generation")


def _count(least: int):
    """An argparse type: an integer of at least `least` (a clear usage error otherwise, not a traceback
    or a run that measures nothing)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def main() -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    ap.add_argument("--batch", type=_count(1), default=16)
    ap.add_argument("--seq-len", type=_count(2), default=128)
    ap.add_argument("--timesteps", type=_count(1), nargs="+", default=[1, 4])
    ap.add_argument("--warmup", type=_count(0), default=1)
    ap.add_argument("--repeat", type=_count(1), default=5)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke run")
    ap.add_argument("--neuron-impl", choices=["fast", "compiled", "reference"], default="compiled",
                    help="neuron implementation of the spiking model with --exec neurons (default: compiled)")
    ap.add_argument("--exec", dest="exec_mode", choices=["layers", "neurons"], default="layers",
                    help="'layers': compiled encoder layers (default); 'neurons': eager layers, --neuron-impl neurons")
    ap.add_argument("--compile-dense", action="store_true",
                    help="also time the dense model under torch.compile (extra ratios *_vs_compiled_dense)")
    ap.add_argument("--skip-energy", action="store_true")
    ap.add_argument("--skip-default-path", action="store_true",
                    help="skip the default path (spikelm convert minilm, then the model as loaded and as a recipe runs it)")
    ap.add_argument("--only", action="append", choices=SECTIONS, default=None,
                    help="run only these sections (repeatable); the dense model is always measured")
    ap.add_argument("--skip-generation", action="store_true",
                    help="skip the BART generation throughput (bart-base shape, T=4, greedy and beam 4, KV cache)")
    ap.add_argument("--no-share", dest="share", action="store_false",
                    help="run Q, K and V with three neuron passes and three GEMMs (default: one shared pass)")
    ap.add_argument("--compare-sharing", action="store_true",
                    help="also pair the training step of the shared-spike model with one running Q/K/V apart")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the models run (cuda: a GPU machine; timings synchronise with it)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bench.json"))
    args = ap.parse_args()
    if args.quick:
        args.shape, args.batch, args.seq_len = "tiny", 4, 32
        if args.only and "default-path" in args.only:  # it converts and runs the real MiniLM: no quick form
            ap.error("--quick has no default-path section (it converts the bundled MiniLM at full size): "
                     "drop --quick to measure it")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    DEVICE = torch.device(args.device)
    sections = set(args.only or SECTIONS)
    args.skip_default_path |= "default-path" not in sections
    args.skip_energy |= "energy" not in sections
    args.skip_generation |= "generation" not in sections
    shape = SHAPES[args.shape]
    batch = make_batch(args.batch, args.seq_len, 30522)
    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "spikelm": spikelm_core.__version__,
        "device": str(DEVICE) if DEVICE.type == "cpu" else torch.cuda.get_device_name(DEVICE),
        "exec": args.exec_mode,
        "neuron_impl": "fast, traced into compiled layers" if args.exec_mode == "layers" else args.neuron_impl,
        "shape": args.shape,
        "share_input_spikes": args.share,
        "batch": args.batch,
        "seq_len": args.seq_len,
    }
    print(json.dumps(info), file=sys.stderr)

    dense = build("dense", shape, None)
    dense_step = median_time(train_step_fn(dense, batch), args.warmup, args.repeat)
    dense_tps = inference_tokens_per_s(dense, batch, args.warmup, args.repeat)
    dense_mem = saved_activation_bytes(dense, batch)
    print(f"dense: step {dense_step:.3f} s, {dense_tps:,.0f} tok/s, activations {dense_mem / 2**20:.1f} MiB",
          file=sys.stderr)
    dense_compiled = None
    if args.compile_dense:
        compiled = torch.compile(dense)
        dense_compiled = {
            "train_step_s": median_time(train_step_fn(compiled, batch), args.warmup + 1, args.repeat),
            "inference_tokens_per_s": inference_tokens_per_s(compiled, batch, args.warmup + 1, args.repeat),
        }
        print(f"dense (torch.compile): step {dense_compiled['train_step_s']:.3f} s, "
              f"{dense_compiled['inference_tokens_per_s']:,.0f} tok/s", file=sys.stderr)
        del compiled
    dense_train = train_step_fn(dense, batch)

    default_path = None
    if not args.skip_default_path and not args.quick:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            default_path = default_path_bench(args.timesteps, batch, dense, dense_mem, dense_train,
                                              dense_compiled["train_step_s"] if dense_compiled else None,
                                              args.warmup, args.repeat, Path(tmp))

    per_t = {}
    for T in (args.timesteps if "explicit" in sections else ()):
        torch._dynamo.reset()
        model = build("spiking", shape, T, args.neuron_impl, share=args.share)
        calibrate(model, batch)
        extra_warmup = 0
        if args.exec_mode == "layers":
            compile_layers(model)
            extra_warmup = 1  # the first call of each mode compiles
        else:
            set_compile_policy(model, "none")  # eager layers: not even the model's own "auto" compile
        sharing = None
        if args.compare_sharing:
            apart = build("spiking", shape, T, args.neuron_impl, share=False)
            apart.load_state_dict(model.state_dict())
            if args.exec_mode == "layers":
                compile_layers(apart)
            else:
                set_compile_policy(apart, "none")
            shared_s, apart_s, shared_over_apart = paired_times(
                train_step_fn(model, batch), train_step_fn(apart, batch), args.warmup + extra_warmup, args.repeat)
            sharing = {"shared_step_s": shared_s, "apart_step_s": apart_s, "shared_over_apart": 1 / shared_over_apart}
            print(f"spiking T={T}: shared Q/K/V spikes {shared_s:.3f} s, apart {apart_s:.3f} s "
                  f"(shared/apart {1 / shared_over_apart:.3f})", file=sys.stderr)
            del apart
        dense_now, step, ratio = paired_times(dense_train, train_step_fn(model, batch), args.warmup + extra_warmup,
                                              args.repeat)
        dense_tps_now, tps, tps_ratio = paired_inference(dense, model, batch, args.warmup + extra_warmup, args.repeat)
        mem = saved_activation_bytes(model, batch)
        per_t[str(T)] = {
            "train_step_s": step,
            "dense_train_step_s": dense_now,
            "train_step_ratio": ratio,
            "train_step_ratio_over_T": ratio / T,
            "inference_tokens_per_s": tps,
            "dense_inference_tokens_per_s": dense_tps_now,
            "inference_throughput_ratio": tps_ratio,
            "inference_throughput_ratio_times_T": tps_ratio * T,
            "activation_bytes": mem,
            "activation_memory_ratio": mem / dense_mem,
            "activation_memory_ratio_over_T": mem / dense_mem / T,
            "sharing": sharing,
        }
        if dense_compiled is not None:
            per_t[str(T)]["train_step_ratio_over_T_vs_compiled_dense"] = step / dense_compiled["train_step_s"] / T
            per_t[str(T)]["inference_throughput_ratio_times_T_vs_compiled_dense"] = (
                tps / dense_compiled["inference_tokens_per_s"] * T)
        print(f"spiking T={T}: step {step:.3f} s against dense {dense_now:.3f} s (ratio/T {ratio / T:.3f}), {tps:,.0f} tok/s, "
              f"activations {mem / 2**20:.1f} MiB ({mem / dense_mem / T:.2f} x T x dense)", file=sys.stderr)
        del model
    del dense, dense_train

    neuron = None
    if "neuron" in sections:
        neuron = neuron_speedup(warmup=args.warmup, repeat=args.repeat) if not args.quick else neuron_speedup(
            (4, 4, 32, 96), 1, 2)
        print(f"neuron {neuron['shape']}: reference {neuron['reference_s']:.3f} s, fast (eager) {neuron['fast_s']:.3f} s "
              f"({neuron['speedup_fast']:.2f}x), compiled {neuron['compiled_s']:.3f} s ({neuron['speedup_compiled']:.2f}x)",
              file=sys.stderr)
    precision = None
    if "precision" in sections:
        precision = precision_bench(shape, max(args.timesteps), batch, args.warmup, args.repeat)
    checkpointing = None
    if "checkpointing" in sections:
        checkpointing = checkpointing_bench(shape, max(args.timesteps), batch, args.warmup, args.repeat)
    energy_s = None if args.skip_energy else energy_wall_time()
    generation = None
    if not args.skip_generation:
        generation = (generation_bench("tiny", 4, 2, 16, 4, 2) if args.quick
                      else generation_bench("bart-base", 4, 4, 128, 32, args.repeat))

    result = {
        **info,
        "dense": {"train_step_s": dense_step, "inference_tokens_per_s": dense_tps, "activation_bytes": dense_mem},
        "dense_compiled": dense_compiled,
        "spiking": per_t,
        "train_step_ratio_over_T": {T: v["train_step_ratio_over_T"] for T, v in per_t.items()},
        "inference_throughput_ratio": {T: v["inference_throughput_ratio"] for T, v in per_t.items()},
        "activation_memory_ratio": {T: v["activation_memory_ratio"] for T, v in per_t.items()},
        "neuron_speedup_vs_reference": None if neuron is None else neuron["speedup_fast"],
        "neuron": neuron,
        "precision": precision,
        "checkpointing": checkpointing,
        "energy_command_s": energy_s,
        "generation": generation,
        "default_path": default_path,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
