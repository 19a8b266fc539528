"""Language-modelling text (`spikelm_core.data.lm`): local files and folders, the hub refused offline."""

from __future__ import annotations

import time

import pytest

from spikelm_core.config.schema import infer_task, normalize_task, task_family
from spikelm_core.data.lm import load_lm_text, local_text_path, normalize_lm_split, normalize_lm_task
from spikelm_core.errors import ConfigError, DataError


@pytest.mark.parametrize("name, task", [("wikitext2", "wikitext2"), ("WikiText-2", "wikitext2"),
                                        ("wikitext-2-raw-v1", "wikitext2"), ("../data/wikitext-2/test.txt", None),
                                        ("sst2", None)])
def test_task_names(name, task):
    assert normalize_lm_task(name) == task


def test_one_task_vocabulary():
    assert normalize_task("WikiText-2") == "wikitext2" and task_family("wikitext2") == "lm"
    assert infer_task("wikitext2") == "wikitext2"
    assert infer_task("../shared/data/text/wikitext-2/valid.txt") is None  # a text file stays MLM text
    assert [normalize_lm_split(s) for s in ("test", "validation", "dev", "valid", "train", "dev_matched")] == [
        "test", "valid", "valid", "valid", "train", None]


def test_a_text_file_serves_every_split(tmp_path):
    f = tmp_path / "essay.txt"
    f.write_text(" = Title = \n\n The river rose .\n")
    for split in ("test", "valid"):
        assert load_lm_text("wikitext2", split, data_dir=str(f)) == (" = Title = \n\n The river rose .\n", str(f))
    assert load_lm_text("wikitext2", source=str(f))[1] == str(f)


@pytest.mark.parametrize("layout", ["wikitext-2/test.txt", "test.txt", "wikitext-2/wiki.test.tokens"])
def test_a_folder_holds_the_splits(layout, tmp_path):
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_text("some text\n")
    assert local_text_path("wikitext2", "test", data_dir=str(tmp_path)) == tmp_path / layout


def test_data_dir_beats_the_source_path(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a\n")
    b.write_text("b\n")
    assert local_text_path("wikitext2", "test", source=str(a), data_dir=str(b)) == b
    assert local_text_path("wikitext2", "test", source="wikitext2") is None  # the task name: the hub


@pytest.mark.parametrize("case", ["missing path", "folder without the split", "empty file", "not utf-8"])
def test_bad_local_text(case, tmp_path):
    where = tmp_path / "x"
    needle = {"missing path": "does not exist", "folder without the split": "no valid text",
              "empty file": "holds no text", "not utf-8": "not UTF-8"}[case]
    if case == "folder without the split":
        where.mkdir()
        (where / "test.txt").write_text("text\n")
    elif case == "empty file":
        where.write_text("  \n")
    elif case == "not utf-8":
        where.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match=needle):
        load_lm_text("wikitext2", "valid", data_dir=str(where))


def test_offline_hub_fails_at_once_naming_the_local_option(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match="hub is offline") as info:
        load_lm_text("wikitext2", "test")
    assert time.perf_counter() - start < 2
    assert "--data-dir" in info.value.hint


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no split 'dev_matched'"):
        load_lm_text("wikitext2", "dev_matched", data_dir=str(tmp_path))


def test_the_shared_wikitext_files(shared_data):
    text, where = load_lm_text("wikitext2", "test", data_dir=str(shared_data / "text"))
    assert where.endswith("wikitext-2/test.txt") and text.startswith(" \n = Robert <unk> = \n")
    valid, _ = load_lm_text("wikitext2", "validation", data_dir=str(shared_data / "text"))
    assert valid != text and len(valid) > 100_000


def test_a_missing_file_is_named_by_the_setting_that_gave_it(tmp_path):
    with pytest.raises(DataError, match="data.train_file '.*nope.txt' does not exist"):
        load_lm_text("wikitext2", "train", source=str(tmp_path / "nope.txt"), source_key="data.train_file")
