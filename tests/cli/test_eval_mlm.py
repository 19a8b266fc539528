"""`spikelm eval` of a masked LM (BERT) on a language-modelling task's text: held-out masked-token
scores (`training.mlm.MaskedLmEvaluation`), checked against transformers' own BertForMaskedLM on the
same masked sequences, and its bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from spikelm_cli.main import app
from tests.cli.test_bad_input import refused
from tests.training_fixtures import tiny_dirs  # noqa: F401  (fixture)

runner = CliRunner()


def _eval(model, corpus, *extra):
    res = runner.invoke(app, ["eval", str(model), "--task", "wikitext2", "--data-dir", str(corpus),
                              "-s", "data.max_length=16", *map(str, extra), "--format", "json"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout), res.stderr


def test_dense_masked_lm_scores_equal_transformers_on_the_same_masks(tiny_dirs):
    """The loss and accuracy are means over every masked token of the split, whatever the batch size,
    and equal what BertForMaskedLM gives on the sequences and masks a pretraining run's held-out text gets."""
    from transformers import AutoTokenizer, BertForMaskedLM

    from spikelm_core.data.text import mlm_dataset
    from spikelm_core.evaluation.masked_lm import HELD_OUT_MASK_SEED
    from spikelm_core.training.mlm import seeded_masking_collator

    model, corpus = tiny_dirs["mlm_teacher"], tiny_dirs["corpus"]
    got, stderr = _eval(model, corpus, "-s", "neuron.kind=dense", "-s", "batch_size=3")
    again, _ = _eval(model, corpus, "-s", "neuron.kind=dense")  # batch 64: one batch
    split = got["metrics"]["test"]
    assert got["primary_metric"] == "mlm_accuracy" and got["firing_rate"] is None and "warning" not in stderr
    assert again["metrics"]["test"] == pytest.approx(split, rel=1e-6)

    tok = AutoTokenizer.from_pretrained(model)
    rows = mlm_dataset(corpus, tok, 16, seed=HELD_OUT_MASK_SEED)
    batch = seeded_masking_collator(tok, 0.15, HELD_OUT_MASK_SEED)([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        logits = BertForMaskedLM.from_pretrained(model).eval()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"]).logits
    masked = batch["labels"] != -100
    loss = torch.nn.functional.cross_entropy(logits[masked], batch["labels"][masked])
    assert split["sequences"] == len(rows) and split["masked_tokens"] == int(masked.sum()) > 0
    assert split["mlm_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert split["mlm_perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert split["mlm_accuracy"] == pytest.approx(float((logits[masked].argmax(-1) == batch["labels"][masked])
                                                        .float().mean()))


def test_spiking_scores(tiny_dirs, tmp_path):
    """A dense masked LM is converted and scored; the firing is that of the scored sequences;
    eval_results.json holds the scores."""
    got, stderr = _eval(tiny_dirs["mlm_teacher"], tiny_dirs["corpus"], "-s", "neuron.num_timesteps=3",
                        "-s", "data.eval_subset=5", "--out-dir", tmp_path / "e")
    assert got["metrics"]["test"]["sequences"] == 5 and 0 < got["firing_rate"] < 1
    assert "over the 5 scored sequences" in got["firing_rate_mean"] and not got["warnings"]
    assert "test, spiking: sequences 5/5 |" in stderr  # the progress line at the end of the pass
    saved = json.loads((tmp_path / "e" / "eval_results.json").read_text())
    assert saved["metrics"] == got["metrics"]


def test_a_folder_of_text_files_is_scored_as_one_corpus(tiny_dirs, tmp_path):
    """A folder of .txt files not laid out as wikitext-2/<split>.txt is read as `pretrain --held-out`
    reads it: its files in order, each ending a document, the same sequences as the text in one file."""
    docs = [d for d in tiny_dirs["corpus"].read_text().split("\n\n") if d.strip()]
    assert len(docs) > 1
    (tmp_path / "one.txt").write_text("\n\n".join(docs))
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(docs[0])
    (folder / "sub" / "b.txt").write_text("\n\n".join(docs[1:]))
    whole, _ = _eval(tiny_dirs["mlm_teacher"], tmp_path / "one.txt", "-s", "neuron.kind=dense")
    parts, _ = _eval(tiny_dirs["mlm_teacher"], folder, "-s", "neuron.kind=dense")
    assert parts["metrics"]["test"] == pytest.approx(whole["metrics"]["test"], rel=1e-6)


def test_firing_picture_of_a_masked_lm(tiny_dirs, tmp_path):
    res = runner.invoke(app, ["eval", str(tiny_dirs["mlm_teacher"]), "--task", "wikitext2", "--data-dir",
                              str(tiny_dirs["corpus"]), "-s", "data.max_length=16", "-s", "neuron.num_timesteps=3",
                              "--plot-firing", str(tmp_path / "f.png"), "--firing-example", "1", "--format", "json"])
    assert res.exit_code == 0, res.stderr
    picture = json.loads((tmp_path / "f.json").read_text())
    tokens = picture["panels"][0]["tokens"]
    assert picture["input"] == {"kind": "example", "split": "test", "index": 1}
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) == 16 and "[MASK]" not in tokens


@pytest.mark.parametrize("extra,needles", [
    (["--seq-len", "16"], ["--seq-len (data.seq_len): for a causal LM's perplexity", "is a masked LM"]),
    (["--stride", "4", "--max-tokens", "50"], ["--stride (data.stride), --max-tokens (data.max_tokens)"]),
    (["-s", "mlm.nsp=true"], ["mlm.nsp:", "has no next-sentence head"]),
], ids=["seq-len", "stride-max-tokens", "nsp-without-head"])
def test_masked_lm_bad_input(tiny_dirs, extra, needles):
    res = runner.invoke(app, ["eval", str(tiny_dirs["mlm_teacher"]), "--task", "wikitext2", "--data-dir",
                              str(tiny_dirs["corpus"]), *extra])
    refused(res, 2, *needles)
    assert res.stdout == ""


def test_an_encoder_without_a_masked_lm_head_is_refused(tiny_dirs):
    """A BertModel (the bundled MiniLM is one) has no masked-LM head: its scores would be a random head's."""
    res = runner.invoke(app, ["eval", str(tiny_dirs["dense"]), "--task", "wikitext2", "--data-dir",
                              str(tiny_dirs["corpus"]), "-s", "data.max_length=16"])
    refused(res, 3, "has no masked-LM head (no weights for cls.", "randomly initialised head",
            "score a pretrained masked LM")
    assert res.stdout == ""


def test_mlm_settings_are_refused_for_another_task(tiny_dirs):
    res = runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                              "-s", "mlm.mlm_probability=0.3"])
    refused(res, 2, "mlm: masks the text a masked LM is scored on", "sst2 reads no mlm settings")


def test_hub_text_is_kept_at_one_path_so_its_tokenisation_is_read_back(tiny_dirs, tmp_path, monkeypatch):
    """Text from the hub (no local file) is written once under the datasets cache, at a fixed path:
    a second eval reads the first one's tokenisation back instead of building a new cache entry."""
    import datasets

    import spikelm_core.training.mlm as mlm

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mlm, "local_text_path", lambda *a, **k: None)
    monkeypatch.setattr(mlm, "load_lm_text", lambda *a, **k: (tiny_dirs["corpus"].read_text(), "hub (test)"))
    first, _ = _eval(tiny_dirs["mlm_teacher"], "wikitext-2", "-s", "neuron.kind=dense")
    kept = tmp_path / "cache" / "spikelm-text" / "wikitext2-test.txt"
    assert kept.read_text() == tiny_dirs["corpus"].read_text()
    stamp = kept.stat().st_mtime_ns
    again, _ = _eval(tiny_dirs["mlm_teacher"], "wikitext-2", "-s", "neuron.kind=dense")
    assert again["metrics"] == first["metrics"] and kept.stat().st_mtime_ns == stamp  # not rewritten


def test_mlm_settings_are_refused_for_a_causal_lm(tiny_dense_llama_dir, tiny_dirs):
    res = runner.invoke(app, ["eval", str(tiny_dense_llama_dir), "--task", "wikitext2", "--data-dir",
                              str(tiny_dirs["corpus"]), "--seq-len", "16", "-s", "mlm.mlm_probability=0.5"])
    refused(res, 2, "mlm: masks the text of a masked LM", "drop the mlm settings")
