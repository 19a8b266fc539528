"""The library logger: `logging.getLogger("spikelm")`, silent unless the application configures it."""

import logging

logger = logging.getLogger("spikelm")
logger.addHandler(logging.NullHandler())


def get_logger(name: str | None = None) -> logging.Logger:
    return logger if not name else logger.getChild(name)


def hms(seconds: float) -> str:
    """A duration as h:mm:ss (progress lines' eta): 3725.4 -> '1:02:05'."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
