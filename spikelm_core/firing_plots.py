"""The picture of `spikelm eval --plot-firing`: firing rate per token (columns) and layer (rows).

One heatmap panel per side of the input (`spikelm_core.firing.TokenFiring`: BERT's input; BART's
source and, teacher-forced, target), one colour scale for all panels (0 to the largest rate shown),
token labels rotated, each row labelled with its layer's rate. A dead layer (no spike at any real
token) is hatched and labelled in red. Long inputs show their first `MAX_PLOTTED_TOKENS` tokens (the
title says so); the JSON written beside the PNG holds every token. matplotlib (Agg back end,
imported on first use) draws; nothing is shown on screen.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from .errors import ConfigError
from .firing import CROSS_KV_ROW
from .io import atomic_write_bytes, atomic_write_text, check_output_location

MAX_PLOTTED_TOKENS = 64
"""Columns drawn per panel; the JSON keeps every token."""



def picture_paths(png: str | Path) -> tuple[Path, Path]:
    """The PNG and the JSON beside it (same name, `.json`)."""
    png = Path(png)
    return png, png.with_suffix(".json")


def check_picture_path(png: str | Path) -> tuple[Path, Path]:
    """Refuse a picture path that is not a .png file name, or that cannot be written, or a file in its place
    that is not a firing picture (before any work)."""
    if not Path(png).name or Path(png).is_dir():
        raise ConfigError(f"--plot-firing '{png}' names no file" if not Path(png).name else
                          f"--plot-firing: '{png}' is a directory", hint="name a .png file, e.g. --plot-firing firing.png")
    png, data = picture_paths(png)
    if png.suffix.lower() != ".png":
        raise ConfigError(f"--plot-firing '{png}' must name a .png file",
                          hint=f"e.g. --plot-firing {png.with_suffix('.png')}")
    for path in (png, data):
        if path.is_dir():
            raise ConfigError(f"--plot-firing: '{path}' is a directory", hint="name a file, e.g. firing.png")
    if png.parent.exists() and not png.parent.is_dir():
        raise ConfigError(f"--plot-firing: cannot create '{png}': '{png.parent}' is a file",
                          hint="name a picture in a folder, e.g. firing.png")
    if data.is_file() and not _is_picture_data(data):
        raise ConfigError(f"--plot-firing: '{data}' exists and is not the data of a firing picture",
                          hint=f"the picture's data is written beside it as {data.name}; choose another picture name")
    if png.is_file() and not (data.is_file() and _is_picture_data(data)):  # a picture is replaced, another file not
        raise ConfigError(f"--plot-firing: '{png}' exists and is not a firing picture (no picture data beside it, "
                          f"{data.name})", hint="choose another picture name, or remove that file")
    check_output_location(png.parent)
    return png, data


def _is_picture_data(path: Path) -> bool:
    """Whether `path` holds what `write_firing_picture` writes (so another run may replace it)."""
    from .training.firing_picture import FIRING_PICTURE_SCHEMA

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("schema") == FIRING_PICTURE_SCHEMA


def _side_title(panel) -> str:
    if panel.side == "target":
        return "decoder input (reference summary, teacher-forced)"
    if any(layer.startswith("encoder.") for layer in panel.layers):
        cross = any(layer.endswith(CROSS_KV_ROW) for layer in panel.layers)
        return "source tokens (encoder" + ("; decoder cross-attention K/V" if cross else "") + ")"
    return "input tokens"


def _label(token: str) -> str:
    """A token as a tick label: byte-level BPE's space/newline marks dropped, '$' kept literal, long ones cut."""
    text = token.replace("\u0120", "").replace("\u010a", "\\n") or "(space)"
    if len(text) > 14:
        text = text[:13] + "\u2026"
    return text.replace("$", r"\$")


def plot_token_firing(picture, path, *, max_tokens: int = MAX_PLOTTED_TOKENS) -> None:
    """Draw `picture` (`training.firing_picture.FiringPicture`) as a PNG at `path` (a path or a binary file)."""
    import matplotlib.pyplot as plt

    fig = token_firing_figure(picture, max_tokens=max_tokens)
    try:
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def token_firing_figure(picture, *, max_tokens: int = MAX_PLOTTED_TOKENS):
    """The matplotlib figure of `picture` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    panels = picture.panels
    shown = [min(len(p.tokens), max_tokens) for p in panels]
    values = [v for p, n in zip(panels, shown) for v in p.rates[:, :n].flatten().tolist() if not math.isnan(v)]
    vmax = max(values, default=0.0) or 1.0
    rows = [max(1, len(p.layers)) for p in panels]
    width = max(7.0, 0.24 * max(shown, default=1) + 4.5)
    height = sum(0.32 * r + 1.7 for r in rows) + 0.9
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [r + 5 for r in rows]})
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")  # gray: a position without a real token
    image = None
    for ax, panel, n in zip(axes[:, 0], panels, shown):
        data = np.ma.masked_invalid(panel.rates[:, :n].numpy().reshape(len(panel.layers), n))
        image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_xlim(-0.5, max(shown) - 0.5)  # one cell width in every panel
        ax.set_xticks(range(n))
        ax.set_xticklabels([_label(t) for t in panel.tokens[:n]], rotation=90,
                           fontsize="small" if n <= 32 else "x-small")
        rates, dead = panel.layer_rates(), set(panel.dead_layers())
        ax.set_yticks(range(len(panel.layers)))
        ax.set_yticklabels([f"{layer} (dead)" if layer in dead else f"{layer}  {rates[layer]:.3f}"
                            for layer in panel.layers], fontsize="small")
        for i, (label, layer) in enumerate(zip(ax.get_yticklabels(), panel.layers)):
            if layer in dead:
                label.set_color("red")
                ax.add_patch(Rectangle((-0.5, i - 0.5), n, 1, fill=False, hatch="xx", edgecolor="red", linewidth=0))
        cut = f", first {n} of {len(panel.tokens)} tokens" if n < len(panel.tokens) else f", {n} tokens"
        ax.set_title(f"{_side_title(panel)}{cut}", fontsize="medium", loc="left")
        ax.set_ylabel("layer (rate)")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:, 0]), label="firing rate", fraction=0.025, pad=0.01, aspect=30)
    steps = f", T={picture.timesteps}" if picture.timesteps else ""
    title = f"firing rate per token and layer: {picture.model} ({picture.task}{steps}), {picture.describe_input()}"
    fig.suptitle(title.replace("$", r"\$"), fontsize="medium")
    return fig


def write_firing_picture(picture, png: str | Path, *, max_tokens: int = MAX_PLOTTED_TOKENS) -> tuple[Path, Path]:
    """Write the PNG and, beside it, its data as JSON (every token; `max_plotted_tokens` says how
    many the PNG shows). Each file is replaced atomically. Returns (png, json)."""
    png, data = picture_paths(png)
    buffer = io.BytesIO()
    plot_token_firing(picture, buffer, max_tokens=max_tokens)
    payload = {**picture.to_dict(), "max_plotted_tokens": max_tokens}
    atomic_write_text(data, json.dumps(payload, indent=2) + "\n")
    atomic_write_bytes(png, buffer.getvalue())
    return png, data


__all__ = ["MAX_PLOTTED_TOKENS", "check_picture_path", "picture_paths", "plot_token_firing", "token_firing_figure",
           "write_firing_picture"]
