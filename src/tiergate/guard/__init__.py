"""The safety guard in front of the open-weight tier: is this request one an open model should not see?

    guard = Guard.from_config(config.policy.guard)
    verdict = await guard.check(request, encoder)      # GuardResult(score, flagged, threshold, texts, windows)

See :mod:`tiergate.guard.model` for the runtime, :mod:`tiergate.train.guard.train` for how the shipped artifact is
trained, and ``docs/benchmarks-guard.md`` for what it achieves on held-out data.
"""

from tiergate.guard.model import Embedder, Guard, GuardResult
from tiergate.guard.windows import Windower, texts_to_check

__all__ = ["Embedder", "Guard", "GuardResult", "Windower", "texts_to_check"]
