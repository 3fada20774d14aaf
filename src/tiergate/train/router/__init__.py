"""Training, calibration and evaluation of the learned router (:mod:`tiergate.routing.learned` runs it)."""
