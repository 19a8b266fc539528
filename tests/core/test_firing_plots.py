"""spikelm_core.firing_plots: the per-token firing picture of `eval --plot-firing` and its JSON."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch

from spikelm_core.errors import ConfigError
from spikelm_core.firing import TokenFiring
from spikelm_core.firing_plots import (
    MAX_PLOTTED_TOKENS,
    check_picture_path,
    token_firing_figure,
    write_firing_picture,
)
from spikelm_core.training.firing_picture import FIRING_PICTURE_SCHEMA, FiringPicture

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def picture(length: int = 70) -> FiringPicture:
    """3 layers x `length` tokens: layer.1 dead, token 5 an outlier, the last position a pad."""
    rates = torch.full((3, length), 0.1, dtype=torch.float64)
    rates[:, 5] = 0.8
    rates[1] = 0.0
    rates[:, -1] = math.nan
    counts = torch.ones(length, dtype=torch.long)
    counts[-1] = 0
    tokens = ("[CLS]", "\u0120the", "$", "a" * 20, *(f"w{i}" for i in range(4, length)))
    panel = TokenFiring(side="source", tokens=tokens, layers=("layer.0", "layer.1", "layer.2"), rates=rates,
                        counts=counts, neurons=(8, 8, 8))
    return FiringPicture(model="runs/sst2/final", task="sst2", timesteps=3,
                         input={"kind": "example", "split": "dev", "index": 4}, panels=(panel,))


def test_the_figure_caps_columns_marks_dead_layers_and_says_so():
    fig = token_firing_figure(picture())
    try:
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) == MAX_PLOTTED_TOKENS
        assert labels[:4] == ["[CLS]", "the", r"\$", "a" * 13 + "\u2026"]  # BPE space mark dropped, '$' literal
        assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())
        assert ax.get_title(loc="left") == f"input tokens, first {MAX_PLOTTED_TOKENS} of 70 tokens"
        rows = [(t.get_text(), t.get_color() == "red") for t in ax.get_yticklabels()]
        assert rows == [("layer.0  0.110", False), ("layer.1 (dead)", True), ("layer.2  0.110", False)]
        assert len(ax.patches) == 1 and ax.patches[0].get_hatch() == "xx"  # the dead row is hatched
        assert ax.images[0].get_array().shape == (3, MAX_PLOTTED_TOKENS)
        assert ax.images[0].get_clim() == (0.0, 0.8)  # the outlier token sets the top of the scale
        assert "runs/sst2/final (sst2, T=3), dev example 4" in fig.get_suptitle()
    finally:
        plt.close(fig)
    short = token_firing_figure(picture(length=9))
    try:
        assert short.axes[0].get_title(loc="left") == "input tokens, 9 tokens"
    finally:
        plt.close(short)


def test_png_and_json_are_written_beside_each_other(tmp_path):
    pic = picture()
    png, data = write_firing_picture(pic, tmp_path / "sub" / "firing.png")
    assert (png, data) == (tmp_path / "sub" / "firing.png", tmp_path / "sub" / "firing.json")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    written = json.loads(data.read_text())
    assert written["schema"] == FIRING_PICTURE_SCHEMA and written["max_plotted_tokens"] == MAX_PLOTTED_TOKENS
    assert written["input"] == {"kind": "example", "split": "dev", "index": 4} and written["timesteps"] == 3
    (panel,) = written["panels"]
    assert len(panel["tokens"]) == 70 and panel["tokens"][1] == "\u0120the"  # every token, as the tokenizer spells it
    assert panel["layers"] == ["layer.0", "layer.1", "layer.2"] and panel["dead_layers"] == ["layer.1"]
    assert panel["rates"][0][5] == 0.8 and panel["rates"][0][-1] is None and panel["counts"][-1] == 0
    assert panel["layer_rates"]["layer.0"] == pytest.approx((68 * 0.1 + 0.8) / 69)
    assert sorted(p.name for p in png.parent.iterdir()) == ["firing.json", "firing.png"]  # no temporary left


@pytest.mark.parametrize("name, needle", [
    pytest.param("firing.jpg", "must name a .png file", id="not-png"),
    pytest.param("firing", "must name a .png file", id="no-suffix"),
    pytest.param("dir.png", "is a directory", id="directory"),
    pytest.param("afile/f.png", "'.*afile' is a file", id="under-a-file"),
    pytest.param("mine.png", "not the data of a firing picture", id="foreign-json-beside"),
    pytest.param("photo.png", "exists and is not a firing picture", id="foreign-png"),
    pytest.param("", "is a directory", id="the-folder-itself"),
])
def test_bad_picture_paths(name, needle, tmp_path):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "mine.json").write_text('{"my": "results"}')
    (tmp_path / "photo.png").write_bytes(PNG_MAGIC)
    with pytest.raises(ConfigError, match=needle):
        check_picture_path(tmp_path / name)
    with pytest.raises(ConfigError, match="names no file"):
        check_picture_path("")
    png, _ = write_firing_picture(picture(), tmp_path / "again.png")  # a firing picture is replaced
    assert check_picture_path(png) == (png, tmp_path / "again.json")
    assert check_picture_path(tmp_path / "new" / "f.PNG") == (tmp_path / "new" / "f.PNG", tmp_path / "new" / "f.json")
