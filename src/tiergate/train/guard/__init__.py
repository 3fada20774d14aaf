"""Training and evaluation of the safety guard (:mod:`tiergate.guard` is its runtime)."""
