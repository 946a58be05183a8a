"""Thresholds on float32 mean effects that mean exactly what they say.

Mean effects are float32; a threshold ``t`` is a Python float (a double). Comparing a float32
tensor with ``t`` in torch rounds ``t`` to the nearest float32 first, so ``0.1000000015 > 0.1``
(true for the numbers) comes out false. For a float32 ``x`` and ``t >= 0``, ``x > t`` holds
exactly when ``x > t_down``, ``t_down`` the largest float32 at most ``t`` (there is no float32
strictly between ``t_down`` and ``t``), so the tools compare with :func:`float32_floor` and
their counts agree with a plain loop over the numbers.
"""

from __future__ import annotations

import struct

FLOAT32_MAX = 3.4028234663852886e38


def float32_floor(t: float) -> float:
    """The largest float32 at most ``t`` (``t`` finite and non-negative), as a float."""
    if not t >= 0 or t == float("inf"):
        raise ValueError(f"a threshold must be finite and non-negative, got {t}")
    if t >= FLOAT32_MAX:
        return FLOAT32_MAX  # the float32 rounding of a larger double would overflow
    bits = struct.unpack("<I", struct.pack("<f", t))[0]  # rounds to the nearest float32
    if struct.unpack("<f", struct.pack("<I", bits))[0] > t:
        bits -= 1  # non-negative floats: the integer order of the bits is the float order
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def float32_bits(x: float) -> int:
    """The bit pattern of the float32 ``x`` (non-negative) as an int: ordered as the floats."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def float32_of_bits(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]
