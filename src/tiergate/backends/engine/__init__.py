"""The embedded engine: llama.cpp in a supervised worker process.

- :mod:`.build`: what the installed engine was compiled with, checked against what this CPU runs and what a
  portable build may contain (``tiergate doctor``, the worker's start-up, a test);
- :mod:`.worker`: the worker process itself (one model, one generation at a time, JSON lines on a pipe);
- :mod:`.supervisor`: the gateway's side: start, self-test, requests multiplexed over the pipe, restart with
  backoff after a crash, state for ``/readyz``.
"""
