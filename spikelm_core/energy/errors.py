"""The energy audit's own error: a count that cannot be trusted is refused, never returned."""

from __future__ import annotations

from spikelm_core.errors import SpikelmError


class EnergyAuditError(SpikelmError):
    """The MAC/AC audit cannot vouch for its numbers.

    Raised when the traced graph holds a matrix-multiply-class operator that nothing counts
    (fvcore would silently report too few MACs), when the count disagrees with the closed form of
    a standard BERT shape, or when a spiking op has no firing rate to bill it with.
    """

    exit_code = 1
