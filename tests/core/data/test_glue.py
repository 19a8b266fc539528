"""GLUE loading: all eight tasks from fixture TSVs in the standard layout, the real files in
../shared/data/glue when present, the hub path (faked), tokenisation and every error path."""

from __future__ import annotations

import time
from pathlib import Path

import datasets
import pytest

from spikelm_core.data import glue
from spikelm_core.data.glue import (
    GLUE_TASK_NAMES,
    GLUE_TASKS,
    find_glue_task_dir,
    get_glue_task,
    glue_data_dir,
    infer_glue_task,
    load_glue,
    normalize_glue_split,
    normalize_glue_task,
    tokenize_glue,
)
from spikelm_core.errors import ConfigError, DataError

REAL_GLUE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "glue"

# ---------------------------------------------------------------------------- fixtures
#
# Per task: the header line (None = headerless), a row writer (text_a, text_b, raw label) and
# the rows of each split as (text_a, text_b, raw label, expected label). Every task has a bare
# `"` in its text (QUOTE_NONE) and SST-2 has the text "null" (keep_default_na=False).

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
                   "label5\tgold_label")


def _mnli_row(a, b, label, dev):
    extra = f"{label}\t{label}\t{label}\t{label}\t{label}" if dev else label
    return f"0\t31193\t31193n\tgovernment\t( ( x ) )\t( y )\t(ROOT x)\t(ROOT y)\t{a}\t{b}\t{extra}\t{label}"


FIXTURES = {
    "cola": {
        "header": None,
        "row": lambda a, b, label: f"gj04\t{label}\t{'' if label == '1' else '*'}\t{a}",
        "train": [('He said "go".', None, "1", 1), ("Book the read John.", None, "0", 0)],
        "dev": [("The sailors rode the breeze clear of the rocks.", None, "1", 1)],
    },
    "sst2": {
        "header": "sentence\tlabel",
        "row": lambda a, b, label: f"{a}\t{label}",
        "train": [('a "charming" journey ', None, "1", 1), ("null", None, "0", 0), ("bleak", None, "0", 0)],
        "dev": [("unflinchingly bleak and desperate ", None, "0", 0)],
    },
    "mrpc": {
        "header": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",  # the BOM of the real file
        "row": lambda a, b, label: f"{label}\t1355540\t1355592\t{a}\t{b}",
        "train": [("He said it fits.", '"It fits our strategy.', "1", 1), ("A cat.", "A dog.", "0", 0)],
        "dev": [("Shares rose.", "Stocks fell.", "0", 0)],
    },
    "qqp": {
        "header": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "row": lambda a, b, label: f"402555\t536040\t536041\t{a}\t{b}\t{label}",
        "train": [('What is "AI"?', "What is artificial intelligence?", "1", 1), ("Why?", "How?", "0", 0)],
        "dev": [("How do I cook rice?", "How to cook rice?", "1", 1)],
    },
    "stsb": {
        "header": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "row": lambda a, b, label: f"0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\t{a}\t{b}\t{label}",
        "train": [('A "plane" takes off.', "An air plane is taking off.", "5.000", 5.0),
                  ("A man plays.", "A woman cooks.", "0.250", 0.25)],
        "dev": [("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "4.750", 4.75)],
    },
    "mnli": {
        "header": {"train": MNLI_TRAIN_HEADER, "dev_matched": MNLI_DEV_HEADER, "dev_mismatched": MNLI_DEV_HEADER},
        "row": {"train": lambda a, b, label: _mnli_row(a, b, label, dev=False),
                "dev_matched": lambda a, b, label: _mnli_row(a, b, label, dev=True),
                "dev_mismatched": lambda a, b, label: _mnli_row(a, b, label, dev=True)},
        "train": [('He said "no".', "He refused.", "entailment", 0), ("It rains.", "Maybe.", "neutral", 1),
                  ("Sun.", "Night.", "contradiction", 2)],
        "dev_matched": [("The new rights are nice enough", "Everyone really likes them.", "neutral", 1)],
        "dev_mismatched": [("Your gift is appreciated.", "We hate it.", "contradiction", 2),
                           ("Yes.", "Agreed.", "entailment", 0)],
    },
    "qnli": {
        "header": "index\tquestion\tsentence\tlabel",
        "row": lambda a, b, label: f"0\t{a}\t{b}\t{label}",
        "train": [('What is "it"?', "It is a thing.", "entailment", 0), ("Who?", "Nobody knows.", "not_entailment", 1)],
        "dev": [("When?", "Tomorrow.", "entailment", 0)],
    },
    "rte": {
        "header": "index\tsentence1\tsentence2\tlabel",
        "row": lambda a, b, label: f"0\t{a}\t{b}\t{label}",
        "train": [('Reeve said "hi".', "Reeve spoke.", "entailment", 0), ("A.", "B.", "not_entailment", 1)],
        "dev": [("Dana Reeve died.", "Christopher Reeve had an accident.", "not_entailment", 1)],
    },
}


def _pick(value, split):
    return value[split] if isinstance(value, dict) else value


def write_task(root: Path, task: str, splits: tuple[str, ...] | None = None) -> Path:
    spec, fx = GLUE_TASKS[task], FIXTURES[task]
    task_dir = root / spec.dir_name
    task_dir.mkdir(parents=True, exist_ok=True)
    for split in splits or spec.split_names:
        header, row = _pick(fx["header"], split), _pick(fx["row"], split)
        lines = ([header] if header is not None else []) + [row(a, b, raw) for a, b, raw, _ in fx[split]]
        (task_dir / spec.file_for(split)).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return task_dir


@pytest.fixture
def glue_root(tmp_path):
    root = tmp_path / "glue"
    for task in GLUE_TASK_NAMES:
        write_task(root, task)
    return root


@pytest.fixture(autouse=True)
def _no_glue_dir(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)


# --------------------------------------------------------------------------- registry


def test_registry_covers_the_eight_tasks():
    assert GLUE_TASK_NAMES == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
    dirs = {t.name: t.dir_name for t in GLUE_TASKS.values()}
    assert dirs == {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
                    "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE"}


def test_label_order_matches_the_hub():
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["rte"].label_names == ("entailment", "not_entailment")
    assert GLUE_TASKS["qnli"].label_names == ("entailment", "not_entailment")
    assert GLUE_TASKS["mrpc"].id2label == {0: "not_equivalent", 1: "equivalent"}
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["stsb"].is_regression
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["cola"].num_labels == 2


def test_splits_and_metrics():
    assert GLUE_TASKS["mnli"].eval_splits == ("dev_matched", "dev_mismatched")
    assert GLUE_TASKS["rte"].eval_splits == ("dev",)
    assert {t: s.primary_metric for t, s in GLUE_TASKS.items()} == {
        "cola": "matthews_correlation", "sst2": "accuracy", "mrpc": "accuracy", "qqp": "accuracy",
        "stsb": "pearson", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}
    assert GLUE_TASKS["mrpc"].metrics == ("accuracy", "f1")
    assert GLUE_TASKS["stsb"].metrics == ("pearson", "spearmanr")


@pytest.mark.parametrize("name, task", [("SST-2", "sst2"), ("glue/STS-B", "stsb"), ("sts_b", "stsb"),
                                        ("MNLI-mm", "mnli"), ("CoLA", "cola"), ("wnli", None), ("", None)])
def test_normalize_glue_task(name, task):
    assert normalize_glue_task(name) == task


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        get_glue_task("sst3")
    assert exc.value.message == "unknown GLUE task 'sst3' (did you mean 'sst2'?)"
    assert exc.value.details == ["valid tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"]


def test_infer_and_data_dir_helpers():
    assert infer_glue_task("glue/rte") == "rte"
    assert infer_glue_task("../shared/data/glue/SST-2/") == "sst2"
    assert infer_glue_task("../shared/data/glue") is None and infer_glue_task(None) is None
    with pytest.raises(ValueError):
        infer_glue_task("glue/nope")
    assert glue_data_dir("glue/rte", "/g") == "/g"
    assert glue_data_dir(None, None) is None
    assert glue_data_dir("/data/RTE", "/ignored") == "/data/RTE"
    assert normalize_glue_split("mnli", "validation_matched") == "dev_matched"
    assert normalize_glue_split("sst2", "validation") == "dev"
    assert normalize_glue_split("mnli", "dev") is None


# ----------------------------------------------------------------------- local loading


@pytest.mark.parametrize("task", GLUE_TASK_NAMES)
def test_load_every_task_from_glue_root(glue_root, task):
    spec, fx = GLUE_TASKS[task], FIXTURES[task]
    loaded = load_glue(task, glue_root)
    assert isinstance(loaded, datasets.DatasetDict)
    assert list(loaded) == list(spec.split_names)
    for split in spec.split_names:
        ds = loaded[split]
        assert ds.column_names == ["text_a", "text_b", "label", "idx"]
        assert ds["text_a"] == [a for a, _, _, _ in fx[split]]
        assert ds["text_b"] == [b for _, b, _, _ in fx[split]]
        assert ds["label"] == [label for _, _, _, label in fx[split]]
        assert ds["idx"] == list(range(len(fx[split])))
    label_feature = loaded["train"].features["label"]
    if spec.is_regression:
        assert label_feature == datasets.Value("float32")
    else:
        assert label_feature.names == list(spec.label_names)


def test_quotes_bom_and_null_survive(glue_root):
    mrpc = load_glue("mrpc", glue_root, split="train")
    assert mrpc[0]["text_b"] == '"It fits our strategy.'  # bare quote, not a quoted field
    sst2 = load_glue("sst2", glue_root, split="train")
    assert sst2[1]["text_a"] == "null"  # not NaN
    assert sst2[0]["text_a"] == 'a "charming" journey '  # trailing space kept as in GLUE


def test_task_dir_given_directly(glue_root):
    ds = load_glue("sst2", glue_root / "SST-2", split="dev")
    assert isinstance(ds, datasets.Dataset) and ds.split == "dev" and len(ds) == 1


def test_task_dir_with_another_name(glue_root, tmp_path):
    other = tmp_path / "my_copy"
    other.mkdir()
    for f in (glue_root / "RTE").iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert find_glue_task_dir("rte", other) == other
    assert len(load_glue("rte", other, split="train")) == 2


def test_lowercase_task_dir(tmp_path):
    root = tmp_path / "glue"
    write_task(root, "sst2").rename(root / "sst2")
    assert find_glue_task_dir("sst2", root) == root / "sst2"


def test_glue_dir_environment_variable(glue_root, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue_root))
    assert len(load_glue("qnli", split="dev")) == 1


def test_argument_beats_glue_dir(glue_root, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "missing"))
    assert len(load_glue("qqp", glue_root, split="dev")) == 1


def test_split_aliases_lists_and_subset(glue_root):
    dd = load_glue("mnli", glue_root, split=["validation_matched", "dev_mismatched"], subset=1)
    assert list(dd) == ["dev_matched", "dev_mismatched"]
    assert len(dd["dev_mismatched"]) == 1 and dd["dev_mismatched"][0]["label"] == 2
    assert load_glue("sst2", glue_root, split="train", subset=2)["text_a"] == load_glue(
        "sst2", glue_root, split="train")["text_a"][:2]
    assert len(load_glue("sst2", glue_root, split="train", subset=100)) == 3


def test_numeric_ids_accepted_for_named_labels(tmp_path):
    task_dir = tmp_path / "RTE"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n1\tc\td\t0\n")
    assert load_glue("rte", task_dir, split="dev")["label"] == [1, 0]


# ----------------------------------------------------------------------------- errors


def test_unknown_split(glue_root):
    with pytest.raises(ConfigError) as exc:
        load_glue("mnli", glue_root, split="dev")
    assert exc.value.message == "GLUE task 'mnli' has no split 'dev'"
    assert exc.value.details == ["splits: train, dev_matched, dev_mismatched (test labels are not public)"]


def test_bad_subset(glue_root):
    with pytest.raises(ConfigError, match="subset must be >= 1"):
        load_glue("sst2", glue_root, subset=0)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError) as exc:
        load_glue("sst2", tmp_path / "nowhere")
    assert exc.value.message == f"GLUE data directory not found: {tmp_path / 'nowhere'}"
    assert "<GLUE_DIR>/SST-2/{train.tsv,dev.tsv}" in exc.value.hint
    assert exc.value.exit_code == 4


def test_data_dir_is_a_file(tmp_path):
    (tmp_path / "x.tsv").write_text("a\n")
    with pytest.raises(DataError, match="is not a directory"):
        load_glue("sst2", tmp_path / "x.tsv")


def test_directory_of_another_task(glue_root):
    with pytest.raises(DataError) as exc:
        load_glue("rte", glue_root / "SST-2")
    assert exc.value.message == f"{glue_root / 'SST-2'} is the SST-2 directory, not RTE"


def test_directory_without_the_task(glue_root, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_glue("cola", empty)
    assert exc.value.message == f"no CoLA data in {empty}"
    assert exc.value.details == [f"looked for {empty / 'CoLA'}/ and {empty / 'train.tsv'}"]
    assert "--data-dir" in exc.value.hint and "GLUE_DIR" in exc.value.hint


def test_missing_split_file_is_named(tmp_path):
    task_dir = write_task(tmp_path, "mnli", splits=("dev_matched",))
    with pytest.raises(DataError) as exc:
        load_glue("mnli", tmp_path)
    assert exc.value.message == f"missing train file for mnli: {task_dir / 'train.tsv'}"
    assert exc.value.details == [f"files in {task_dir}: dev_matched.tsv"]
    assert len(load_glue("mnli", tmp_path, split="dev_matched")) == 1


def test_missing_columns_are_named(tmp_path):
    task_dir = tmp_path / "QNLI"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("index\tquestion\ttext\tlabel\n0\tq\tt\tentailment\n")
    with pytest.raises(DataError) as exc:
        load_glue("qnli", tmp_path, split="dev")
    assert exc.value.message == f"{task_dir / 'dev.tsv'}: missing column(s) 'sentence'"
    assert exc.value.details == ["columns found: 'index', 'question', 'text', 'label'"]


def test_unparseable_labels_name_the_lines(tmp_path):
    task_dir = tmp_path / "SST-2"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tpos\nugly\t2\n")
    with pytest.raises(DataError) as exc:
        load_glue("sst2", tmp_path, split="dev")
    assert exc.value.message == f"{task_dir / 'dev.tsv'}: 2 row(s) with an unreadable label"
    assert exc.value.details == ["line 3: label='pos'", "line 4: label='2'"]
    assert exc.value.hint == "sst2 labels must be 'negative' or 'positive' (or ids 0-1)"


def test_unparseable_scores(tmp_path):
    task_dir = write_task(tmp_path, "stsb", splits=("dev",))
    text = (task_dir / "dev.tsv").read_text().replace("4.750", "high")
    (task_dir / "dev.tsv").write_text(text)
    with pytest.raises(DataError) as exc:
        load_glue("stsb", tmp_path, split="dev")
    assert exc.value.details == ["line 2: score='high'"] and "a number" in exc.value.hint


def test_headered_cola_is_explained(tmp_path):
    task_dir = tmp_path / "CoLA"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("source\tlabel\torig_label\tsentence\ngj04\t1\t\tFine.\n")
    with pytest.raises(DataError) as exc:
        load_glue("cola", tmp_path, split="dev")
    assert exc.value.details == ["line 1: label='label'"]
    assert exc.value.hint.endswith("CoLA files have no header row (drop the first line)")


def test_rows_with_extra_fields(tmp_path):
    task_dir = tmp_path / "CoLA"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("gj04\t1\t\tFine.\ngj04\t1\t\tToo\tmany.\n")
    with pytest.raises(DataError) as exc:
        load_glue("cola", tmp_path, split="dev")
    assert exc.value.message == f"cannot parse {task_dir / 'dev.tsv'} as a tab-separated GLUE file"
    assert "line 2" in exc.value.details[0]


@pytest.mark.parametrize("dirname, task, text, line", [
    ("MRPC", "mrpc", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\t\"He said \t hi\"\tSecond.\n", 2),
    ("CoLA", "cola", "gj04\t1\t\tThe cat\tsat.\ngj04\t1\t\tFine.\n", 1),
])
def test_a_first_row_with_a_tab_inside_a_field_is_refused_not_cut(tmp_path, dirname, task, text, line):
    """pandas drops the extra fields of a first row without a word (later rows it refuses itself)."""
    (tmp_path / dirname).mkdir()
    (tmp_path / dirname / "dev.tsv").write_text(text)
    with pytest.raises(DataError, match="more tab-separated fields than the file has columns") as exc:
        load_glue(task, tmp_path, split="dev")
    assert exc.value.details[0].startswith(f"line {line}:") and "not quoted" in exc.value.hint


def test_trailing_tabs_blank_lines_and_odd_digits(tmp_path, caplog):
    task_dir = tmp_path / "SST-2"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("sentence\tlabel\ngood\t1\t\nbad\t0\t\n")  # a trailing tab on each row
    assert load_glue("sst2", tmp_path, split="dev")["label"] == [1, 0]
    # blank lines do not shift the line an error names; '²' is a digit to Python, not a label
    (task_dir / "dev.tsv").write_text("sentence\tlabel\na\t1\n\n  \nb\t2\nc\t\u00b2\n\n\t\n")
    with pytest.raises(DataError) as exc:
        load_glue("sst2", tmp_path, split="dev")
    # a line of a tab is a row to pandas (an empty sentence and label), not a blank line
    assert exc.value.details == ["line 5: label='2'", "line 6: label='\u00b2'", "line 8: label=''"]
    # STS-B scores off GLUE's 0-5 scale are trained as they are, with a warning
    stsb = write_task(tmp_path, "stsb", splits=("dev",))
    text = (stsb / "dev.tsv").read_text().replace("4.750", "7.5")
    (stsb / "dev.tsv").write_text(text)
    with caplog.at_level("WARNING", logger="spikelm"):
        assert 7.5 in load_glue("stsb", tmp_path, split="dev")["label"]
    assert "score(s) outside STS-B's 0-5 scale (line 2: 7.5)" in caplog.text


def test_wnli_and_the_diagnostic_set_are_named_not_read_as_another_task(tmp_path):
    (tmp_path / "WNLI").mkdir()
    (tmp_path / "WNLI" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n")
    with pytest.raises(DataError, match="is the WNLI directory, which spikelm does not score, not RTE"):
        load_glue("rte", tmp_path / "WNLI", split="dev")
    with pytest.raises(ConfigError, match="GLUE's WNLI is not supported"):
        get_glue_task("wnli")


def test_a_missing_mnli_dev_set_hints_at_scoring_the_other(tmp_path):
    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "dev_matched.tsv").write_text("index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tneutral\n")
    with pytest.raises(DataError, match="missing dev_mismatched file") as exc:
        load_glue("mnli", tmp_path, split="dev_mismatched")
    assert exc.value.hint.endswith("-s 'splits=[dev_matched]'")
    assert len(load_glue("mnli", tmp_path, split="dev_matched")) == 1


def test_a_header_without_the_task_columns_says_what_the_header_holds(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("it 's charming\t1\nit 's dull\t0\n")  # no header line
    with pytest.raises(DataError, match="missing column") as exc:
        load_glue("sst2", tmp_path, split="dev")
    assert exc.value.hint.startswith("the first line of a sst2 file is its header, naming at least sentence, label")


def test_empty_file(tmp_path):
    task_dir = tmp_path / "RTE"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_glue("rte", tmp_path, split="dev")


def test_not_utf8(tmp_path):
    task_dir = tmp_path / "SST-2"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        load_glue("sst2", tmp_path, split="dev")


@pytest.mark.parametrize("task, dirname, text, line", [
    ("cola", "CoLA", "gj04\t1\t\tfine .\n   \ngj04\t1\n", 3),  # no header: source, label, orig_label, sentence
    ("mrpc", "MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat .\n", 2),
])
def test_short_rows_are_refused(tmp_path, task, dirname, text, line):
    """A row missing a field the task reads is refused (pandas would read it as an empty sentence);
    an empty field that is there is a sentence like any other, and a blank line is skipped."""
    (tmp_path / dirname).mkdir()
    (tmp_path / dirname / "dev.tsv").write_text(text)
    with pytest.raises(DataError, match="1 row\\(s\\) with too few tab-separated fields") as exc:
        load_glue(task, tmp_path, split="dev")
    assert exc.value.details[0].startswith(f"line {line}:")
    good = text.splitlines()[: line - 1]
    (tmp_path / dirname / "dev.tsv").write_text("\n".join(good) + "\n")
    rows = [g for g in good if g.strip()][0 if task == "cola" else 1:]  # blank lines skipped, as pandas does
    if rows:
        assert len(load_glue(task, tmp_path, split="dev")) == len(rows)


# -------------------------------------------------------------------------------- hub


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_without_local_data_fails_at_once(monkeypatch, var):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(var, "1")
    monkeypatch.setattr(glue, "_hub_reachable", lambda *a, **k: pytest.fail("probed the hub while offline"))
    start = time.monotonic()
    with pytest.raises(DataError) as exc:
        load_glue("qqp")
    assert time.monotonic() - start < 2
    assert exc.value.message == f"no local data for GLUE task 'qqp', and the hub is offline ({var}=1)"
    assert "--data-dir" in exc.value.hint and "GLUE_DIR" in exc.value.hint
    assert "<GLUE_DIR>/QQP/{train.tsv,dev.tsv}" in exc.value.hint


def _online(monkeypatch, reachable=True):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(glue, "_hub_reachable", lambda *a, **k: reachable)


def test_unreachable_hub(monkeypatch):
    _online(monkeypatch, reachable=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("called the hub"))
    with pytest.raises(DataError, match="the hub cannot be reached"):
        load_glue("rte")


def test_hub_columns_are_made_uniform(monkeypatch):
    _online(monkeypatch)
    calls = []
    names = ["entailment", "neutral", "contradiction"]

    def fake_load_dataset(path, name):
        calls.append((path, name))
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int32")})
        make = lambda rows: datasets.Dataset.from_dict(  # noqa: E731
            {"premise": [r[0] for r in rows], "hypothesis": [r[1] for r in rows],
             "label": [r[2] for r in rows], "idx": [r[3] for r in rows]}, features=features)
        return datasets.DatasetDict({"train": make([("p", "h", 2, 0)]),
                                     "validation_matched": make([("pm", "hm", 1, 5)]),
                                     "validation_mismatched": make([("pmm", "hmm", 0, 7)]),
                                     "test_matched": make([("t", "t", -1, 0)])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd = load_glue("mnli")
    assert calls == [("nyu-mll/glue", "mnli")]
    assert list(dd) == ["train", "dev_matched", "dev_mismatched"]
    assert dd["dev_mismatched"][0] == {"text_a": "pmm", "text_b": "hmm", "label": 0, "idx": 7}
    assert dd["train"].features["label"].names == names


def test_hub_single_sentence_task(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name: datasets.DatasetDict(
        {"validation": datasets.Dataset.from_dict({"sentence": ["ok"], "label": [1], "idx": [0]})}))
    assert load_glue("sst2", split="validation")[0] == {"text_a": "ok", "text_b": None, "label": 1, "idx": 0}


def test_hub_failure_becomes_data_error(monkeypatch):
    _online(monkeypatch)

    def boom(*a, **k):
        raise ConnectionError("503")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DataError) as exc:
        load_glue("cola")
    assert exc.value.details == ["ConnectionError: 503"]


# ---------------------------------------------------------------------------- tokenise


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    words = ("[PAD] [UNK] [CLS] [SEP] [MASK] a the man cat dog is was he said it fits our strategy "
             "shares rose stocks fell what plane takes off an air taking woman cooks plays").split()
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)


def test_tokenize_pairs(glue_root, tokenizer):
    dd = tokenize_glue(load_glue("mrpc", glue_root), tokenizer, max_length=7)
    assert set(dd) == {"train", "dev"}
    row = dd["train"][0]
    assert sorted(row) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert len(row["input_ids"]) == 7 and row["input_ids"][0] == tokenizer.cls_token_id
    assert 1 in row["token_type_ids"]  # second segment present
    assert dd["train"]["labels"] == [1, 0]
    short = dd["train"][1]  # "A cat." / "A dog.": [CLS] a cat . [SEP] a dog . [SEP] -> 9 > 7, truncated
    assert len(short["input_ids"]) == 7


def test_tokenize_single_sentences_without_padding(glue_root, tokenizer):
    ds = tokenize_glue(load_glue("sst2", glue_root, split="train"), tokenizer, max_length=32)
    assert "text_a" not in ds.column_names
    lengths = [len(ids) for ids in ds["input_ids"]]
    assert len(set(lengths)) > 1  # dynamic padding is left to the collator
    assert all(set(t) == {0} for t in ds["token_type_ids"])


def test_tokenize_regression_labels_are_float32(glue_root, tokenizer):
    ds = tokenize_glue(load_glue("stsb", glue_root, split="train"), tokenizer, max_length=16)
    assert ds.features["labels"] == datasets.Value("float32")
    assert ds["labels"] == [5.0, 0.25]


# --------------------------------------------------------------------- real files


REAL_COUNTS = {
    "cola": {"train": 8551, "dev": 1043},
    "sst2": {"train": 67349, "dev": 872},
    "mrpc": {"train": 3668, "dev": 408},
    "rte": {"train": 2490, "dev": 277},
    "stsb": {"train": 5749, "dev": 1500},
}


@pytest.mark.parametrize("task", sorted(REAL_COUNTS))
def test_real_glue_files(task):
    task_dir = REAL_GLUE / GLUE_TASKS[task].dir_name
    if not task_dir.is_dir():
        pytest.skip(f"{task_dir} not present")
    dd = load_glue(task, REAL_GLUE)
    assert {split: len(ds) for split, ds in dd.items()} == REAL_COUNTS[task]
    assert all(t for t in dd["dev"]["text_a"])
    if GLUE_TASKS[task].is_pair:
        assert all(b is not None for b in dd["dev"]["text_b"])


def test_real_glue_details():
    if not (REAL_GLUE / "MRPC").is_dir():
        pytest.skip(f"{REAL_GLUE} not present")
    mrpc = load_glue("mrpc", REAL_GLUE / "MRPC", split="dev")
    assert mrpc[0]["text_b"].startswith('"The foodservice pie business')  # bare quote kept
    rte = load_glue("rte", REAL_GLUE, split="dev")
    assert rte["label"].count(0) == 146 and rte[0]["label"] == 1  # not_entailment
    sst2 = load_glue("sst2", REAL_GLUE, split="dev")
    assert sum(sst2["label"]) == 444
    stsb = load_glue("stsb", REAL_GLUE, split="dev", subset=2)
    assert stsb["label"] == [5.0, 4.75]


def test_unreadable_file_is_a_read_error_not_an_output_error(tmp_path, monkeypatch):
    import errno

    import pandas as pd

    task_dir = tmp_path / "SST-2"
    task_dir.mkdir()
    (task_dir / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")

    def deny(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(pd, "read_csv", deny)
    with pytest.raises(DataError, match="cannot read .*dev.tsv: Permission denied"):
        load_glue("sst2", tmp_path, split="dev")


def test_folder_named_after_the_task_holding_the_task_folder(tmp_path):
    root = tmp_path / "sst2"
    write_task(root, "sst2")
    assert find_glue_task_dir("sst2", root) == root / "SST-2"
    assert len(load_glue("sst2", root, split="dev")) > 0


def test_a_task_named_folder_holding_the_task_folder_is_found_from_its_parent(tmp_path):
    """GLUE_DIR/stsb/STS-B/ (GLUE_DIR the parent, as usual): the child named after the task is read by
    the same rules as a --data-dir naming it."""
    write_task(tmp_path / "stsb", "stsb")
    assert find_glue_task_dir("stsb", tmp_path) == tmp_path / "stsb" / "STS-B"
    assert len(load_glue("stsb", tmp_path, split="dev")) > 0
    write_task(tmp_path / "other", "sst2")  # the standard layout is read as before
    assert find_glue_task_dir("sst2", tmp_path / "other") == tmp_path / "other" / "SST-2"
