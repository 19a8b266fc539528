"""The library logger: `logging.getLogger("spikelm")`, silent unless the application configures it."""

import logging

logger = logging.getLogger("spikelm")
logger.addHandler(logging.NullHandler())


def get_logger(name: str | None = None) -> logging.Logger:
    return logger if not name else logger.getChild(name)


_warned: set = set()


def warn_once(log: logging.Logger, key, message: str, *args, seen: set | None = None) -> None:
    """`log.warning(message, *args)` the first time this process meets `key` (in `seen`, default a
    process-wide set)."""
    seen = _warned if seen is None else seen
    if key not in seen:
        seen.add(key)
        log.warning(message, *args)


def hms(seconds: float) -> str:
    """A duration as h:mm:ss (progress lines' eta): 3725.4 -> '1:02:05'."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
