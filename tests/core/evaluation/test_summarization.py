"""Summarisation data loading, ROUGE evaluation with generation, and their bad inputs."""

import json

import pytest
import torch
from transformers import BertTokenizerFast

import spikelm_core  # noqa: F401
from spikelm_core.calibration import calibrate
from spikelm_core.data.summarization import load_summarization, tokenize_summarization
from spikelm_core.errors import ConfigError, DataError
from spikelm_core.evaluation.metrics import rouge_scores
from spikelm_core.evaluation.summarization import evaluate_summarization, generate_summaries, lead_sentences
from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration

from tests.conftest import write_tiny_vocab
from tests.core.models.test_spiking_bart import BART_TINY


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_local_jsonl_and_column_names(tmp_path):
    write_jsonl(tmp_path / "validation.jsonl", [{"document": "a b c", "summary": "a", "id": 1}] * 3)
    ds = load_summarization("xsum", "validation", data_dir=tmp_path)
    assert len(ds) == 3 and ds[0]["document"] == "a b c" and ds[0]["summary"] == "a"
    f = write_jsonl(tmp_path / "cnn.jsonl", [{"article": "x y", "highlights": "x\ny"}])
    ds = load_summarization("cnn_dm", "validation", files={"validation": f})
    assert set(ds.column_names) == {"document", "summary"}
    assert ds[0]["summary"] == "x\ny"


def test_missing_columns_are_named(tmp_path):
    f = write_jsonl(tmp_path / "v.jsonl", [{"article": "x", "abstract": "y"}])
    with pytest.raises(DataError) as exc:
        load_summarization("cnn_dm", "validation", files={"validation": f})
    assert "highlights" in exc.value.message and "article, abstract" in exc.value.details[0]
    ds = load_summarization("cnn_dm", "validation", files={"validation": f}, summary_column="abstract")
    assert ds[0]["summary"] == "y"
    # the named columns win over a file's own document / summary columns
    both = write_jsonl(tmp_path / "both.jsonl", [{"document": "d", "body": "b", "summary": "s", "alt": "t"}])
    ds = load_summarization("xsum", "validation", files={"validation": both}, text_column="body", summary_column="alt")
    assert (ds[0]["document"], ds[0]["summary"]) == ("b", "t")


def test_columns_that_swap_or_collide(tmp_path):
    f = write_jsonl(tmp_path / "swap.jsonl", [{"document": "the summary", "summary": "the document", "id": 3, "body": "b"}])
    ds = load_summarization("xsum", "validation", files={"validation": f}, text_column="summary",
                            summary_column="document")
    assert (ds[0]["document"], ds[0]["summary"], ds[0]["id"]) == ("the document", "the summary", 3)
    ds = load_summarization("xsum", "validation", files={"validation": f}, text_column="body", summary_column="summary")
    assert set(ds.column_names) == {"document", "summary", "id"} and ds[0]["summary"] == "the document"
    assert ds[0]["document"] == "b"  # the file's own document column, not read, gives way
    with pytest.raises(ConfigError, match="both read from column 'summary'") as exc:
        load_summarization("xsum", "validation", files={"validation": f}, text_column="summary")
    assert "'document' and 'summary'" in exc.value.hint


def test_non_utf8_json_lines_and_a_file_for_a_directory(tmp_path, monkeypatch):
    bad = tmp_path / "validation.jsonl"
    bad.write_bytes(b'{"document": "ok", "summary": "s"}\n{"document": "He said \x92a good day\x92.", "summary": "G."}\n')
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 57\)") as exc:
        load_summarization("xsum", "validation", data_dir=tmp_path)
    assert exc.value.hint == "save the file as UTF-8"
    from spikelm_core.data import summarization

    bad.write_bytes('{"d": "\u20ac\u20ac'.encode() + b"\xe2\x28")  # a bad byte (13, as a whole-file decode says) after a character split between blocks
    monkeypatch.setattr(summarization, "_UTF8_BLOCK", 8)
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 13\)"):
        load_summarization("xsum", "validation", data_dir=tmp_path)
    bad.write_bytes(b'{"document": "ab\xe2\x82')  # a character cut off at the end of the file
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 16\)"):
        load_summarization("xsum", "validation", data_dir=tmp_path)
    with pytest.raises(DataError, match="is a file") as exc:
        load_summarization("xsum", "validation", data_dir=bad)
    assert f"-s data.validation_file={bad}" in exc.value.hint


def test_the_test_split_hint_names_a_directory(tmp_path):
    with pytest.raises(DataError) as exc:
        load_summarization("xsum", "test", data_dir=_empty_dir(tmp_path))
    assert "test.jsonl" in exc.value.hint and "test_file" not in exc.value.hint
    with pytest.raises(DataError) as exc:
        load_summarization("xsum", "test", files={"validation": tmp_path / "v.jsonl"})
    assert "--data-dir DIR holding test.jsonl" in exc.value.hint


def test_empty_document_and_missing_files(tmp_path):
    f = write_jsonl(tmp_path / "v.jsonl", [{"document": "ok", "summary": "s"}, {"document": "  ", "summary": "s"}])
    with pytest.raises(DataError, match="empty or non-text document"):
        load_summarization("xsum", "validation", files={"validation": f})
    for bad in ("", None, 5):  # a blank, missing or numeric summary: named before any generation runs
        g = write_jsonl(tmp_path / "s.jsonl", [{"document": "ok", "summary": "s"}, {"document": "d", "summary": bad}])
        with pytest.raises(DataError, match=r"1 empty or non-text summary\(s\) in column 'summary', first at row 1") as exc:
            load_summarization("xsum", "validation", files={"validation": g})
        assert "fill those rows" in exc.value.hint
    with pytest.raises(DataError, match="no validation file"):
        load_summarization("xsum", "validation", data_dir=_empty_dir(tmp_path))
    with pytest.raises(DataError, match="hub is offline"):
        load_summarization("xsum", "validation")
    with pytest.raises(ConfigError, match="valid tasks"):
        load_summarization("gigaword", "validation")


def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_source_length_beyond_positions_is_refused(tmp_path):
    write_jsonl(tmp_path / "validation.jsonl", [{"document": "a", "summary": "b"}])
    ds = load_summarization("xsum", "validation", data_dir=tmp_path)
    tok = BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt")))
    with pytest.raises(ConfigError, match="exceeds the model's 64 positions"):
        tokenize_summarization(ds, tok, max_source_length=128, model_max_positions=64)
    with pytest.raises(ConfigError, match=r"summary \(target\) length 65 \(data.max_target_length\)") as exc:
        tokenize_summarization(ds, tok, max_source_length=64, max_target_length=65, model_max_positions=64)
    assert exc.value.hint == "-s data.max_target_length=64 (or less)"


def test_rouge_hand_computed():
    # unigram overlap 2 of 3 both ways -> R1 F = 2/3; bigram "the cat" shared of 2 -> R2 F = 1/2
    scores = rouge_scores(["the cat sat"], ["the cat ran"])
    assert scores["rouge1"] == pytest.approx(200 / 3)
    assert scores["rouge2"] == pytest.approx(50.0)
    assert scores["rougeL"] == pytest.approx(200 / 3)


def test_rouge_intervals_bracket_the_mean_are_seeded_and_leave_numpy_alone():
    import numpy as np

    from spikelm_core.evaluation.metrics import rouge_intervals

    preds = ["the cat sat on the mat", "a dog ran", "rain fell all day", "the river rose", "farmers moved cattle"]
    refs = ["the cat sat", "the dog ran home", "it rained all day long", "the river rose fast", "cattle moved"]
    means = rouge_scores(preds, refs)
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    ci = rouge_intervals(preds, refs)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's random state untouched
    assert ci == rouge_intervals(preds, refs)  # the same interval every time
    for name, (low, high) in ci.items():
        assert low <= means[name] + 1e-9 and means[name] <= high + 1e-9 and low < high


def test_generation_and_rouge_on_a_tiny_spiking_bart(tmp_path):
    tok = BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt")))
    cfg = SpikingBartConfig(**{**BART_TINY, "num_timesteps": 2, "pad_token_id": tok.pad_token_id,
                               "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id,
                               "decoder_start_token_id": tok.cls_token_id})
    torch.manual_seed(0)
    model = SpikingBartForConditionalGeneration(cfg)
    write_jsonl(tmp_path / "validation.jsonl",
                [{"document": "the river rose and the farmers watched", "summary": "the river rose"}] * 4)
    ds = load_summarization("xsum", "validation", data_dir=tmp_path)
    enc = tok(list(ds["document"]), return_tensors="pt", padding=True)
    calibrate(model, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    res = evaluate_summarization(model, tok, ds, num_beams=2, max_source_length=32, max_new_tokens=5, batch_size=2)
    assert res.num_examples == 4 and set(res.rouge) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert 0.0 < res.mean_firing_rate < 1.0 and "decoder.layers.0" in res.layer_firing_rates
    with pytest.raises(ConfigError, match="beam size"):
        generate_summaries(model, tok, ["x"], num_beams=0)
    # spikelm's generation settings, not the checkpoint's: no repeated token with no_repeat_ngram_size=1,
    # even where the model's generation_config asks otherwise
    model.generation_config.no_repeat_ngram_size = 0
    docs = list(ds["document"][:2])
    plain = generate_summaries(model, tok, docs, num_beams=1, max_source_length=32, max_new_tokens=12)
    unique = generate_summaries(model, tok, docs, num_beams=1, max_source_length=32, max_new_tokens=12,
                                no_repeat_ngram_size=1)
    assert any(len(set(p.split())) < len(p.split()) for p in plain)  # the untrained model repeats itself
    assert all(len(set(u.split())) == len(u.split()) for u in unique)
    model.generation_config.no_repeat_ngram_size = 1
    assert generate_summaries(model, tok, docs, num_beams=1, max_source_length=32, max_new_tokens=12) == plain
    # min_new_tokens: a model that ends every summary at once writes at least that many tokens
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(cfg.vocab_size))
    with torch.no_grad():
        model.lm_head.bias[tok.all_special_ids] = -1e4  # no special token to hide in the decoded text ...
        model.lm_head.bias[cfg.eos_token_id] = 1e4  # ... but the end of the summary, first
    assert generate_summaries(model, tok, docs, num_beams=1, max_source_length=32, max_new_tokens=12) == ["", ""]
    longer = generate_summaries(model, tok, docs, num_beams=1, max_source_length=32, max_new_tokens=12, min_new_tokens=6)
    assert all(len(s.split()) == 6 for s in longer)  # then the end, as soon as it may come
    with pytest.raises(ConfigError, match="min new tokens"):
        generate_summaries(model, tok, docs, num_beams=1, max_new_tokens=4, min_new_tokens=5)


def test_rouge_lsum_splits_predictions_and_references_alike(tmp_path, monkeypatch):
    """A prediction equal to a multi-sentence reference stored on one line scores 100 on every ROUGE."""
    import spikelm_core.evaluation.summarization as summ

    text = "The cat sat on the mat. The dog sat on the cat! The mat was red and the cat was red."
    write_jsonl(tmp_path / "validation.jsonl", [{"document": "d", "summary": text}])
    ds = load_summarization("xsum", "validation", data_dir=tmp_path)
    monkeypatch.setattr(summ, "generate_summaries", lambda model, tok, docs, **kw: [text] * len(docs))
    model = torch.nn.Linear(1, 1)
    model.config = type("C", (), {"max_position_embeddings": 64})()
    res = summ.evaluate_summarization(model, None, ds, max_source_length=8, max_new_tokens=8)
    assert res.rouge == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0})


def test_lead_1_on_real_xsum_matches_the_documented_sanity_value(shared_data):
    ds = load_summarization("xsum", "test", files={"test": shared_data / "summarization/xsum/xsum-1000.jsonl"},
                            subset=50)
    scores = rouge_scores([lead_sentences(d) for d in ds["document"]], list(ds["summary"]))
    assert scores["rouge1"] == pytest.approx(17.5, abs=0.1)
    assert scores["rouge2"] == pytest.approx(1.5, abs=0.1)
    assert scores["rougeL"] == pytest.approx(12.8, abs=0.1)


def test_the_progress_line_of_a_generation_pass():
    from spikelm_core.evaluation.summarization import progress_line

    assert progress_line(64, 400, 32.0) == "summaries 64/400 | 2.0 documents/s | eta 0:02:48"
    assert progress_line(400, 400, 200.0) == "summaries 400/400 | 2.0 documents/s | 200.0 s"
    assert progress_line(0, 400, 0.0) == "summaries 0/400"


def test_an_edited_file_is_read_again_even_with_its_old_mtime(tmp_path):
    """The datasets cache keys a local file by path and mtime: an edit that keeps the mtime (cp -p,
    rsync -t) must still be read afresh, not served from the cache."""
    import os

    f = write_jsonl(tmp_path / "validation.jsonl", [{"document": "old text", "summary": "old"}])
    st = os.stat(f)
    assert load_summarization("xsum", "validation", data_dir=tmp_path)[0]["document"] == "old text"
    write_jsonl(f, [{"document": "new longer text", "summary": "new"}])
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_summarization("xsum", "validation", data_dir=tmp_path)[0]["document"] == "new longer text"
