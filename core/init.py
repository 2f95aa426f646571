"""Weight initialisation schemes (``model.init``, overridable per stage, pooler and upsampler).

* ``scaled`` (aunet's default): every matrix from a normal of std ``init_std`` (0.02), the output
  projections of each residual branch (attention output, feed-forward down) divided by
  sqrt(2 x layers), so that the residual stream's variance does not grow with depth.
* ``reference`` (the authors' code, and the paper's learning-rate law, which was fitted with it):
  every matrix from a normal of std ``fan_in ** -0.5``, truncated at 3 standard deviations; no
  depth scaling. Attention and feed-forward inputs get ``dim ** -0.5``, the feed-forward output
  ``hidden ** -0.5``, poolers and upsamplers their input width's, the byte embedding and the
  output head ``dim_0 ** -0.5``. Residual branches so start 3 to 8 times larger than ``scaled``.

Specs are torch-free, so the enum lives here and the functions import torch when called.
"""

from __future__ import annotations

import enum
import math
from typing import Any

#: Truncation of the ``reference`` normal, in standard deviations.
TRUNCATION = 3.0


class Init(enum.Enum):
    """How a component's matrices are initialised."""

    SCALED = "scaled"
    REFERENCE = "reference"


def init_matrix(weight: Any, init: Init | None, *, std: float, fan_in: int, depth_scale: int | None = None) -> None:
    """Initialise one matrix in place: ``reference`` from its ``fan_in``; ``scaled`` (and None)
    from ``std``, divided by sqrt(2 x ``depth_scale``) for a residual branch's output."""
    import torch

    with torch.no_grad():
        if init is Init.REFERENCE:
            s = fan_in**-0.5
            torch.nn.init.trunc_normal_(weight, std=s, a=-TRUNCATION * s, b=TRUNCATION * s)
        else:
            s = std / math.sqrt(2 * depth_scale) if depth_scale else std
            torch.nn.init.normal_(weight, std=s)


def truncated_std(std: float) -> float:
    """The standard deviation a normal of ``std`` truncated at ``TRUNCATION`` sigmas has (what the
    tests expect of ``reference`` weights: 0.9866 x std)."""
    a = TRUNCATION
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return std * math.sqrt(1 - 2 * a * phi / mass)
