"""The library logger: `logging.getLogger("spikelm")`, silent unless the application configures it."""

import logging

logger = logging.getLogger("spikelm")
logger.addHandler(logging.NullHandler())


def get_logger(name: str | None = None) -> logging.Logger:
    return logger if not name else logger.getChild(name)
