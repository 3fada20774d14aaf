"""Training and evaluation, offline: nothing here is imported by serving (``tiergate serve``).

    guard/    the safety guard: corpus (data.py, synthetic.py), embeddings (embed.py), heads (fit.py),
              cross-validation and the artifact (train.py), metrics.py, plot.py
    router/   the learned router: outcomes and the two ridge stages (train.py), calibrate.py, metrics.py
    jsonl.py  what both read: JSONL lines with a prompt, and DataError

The ``[train]`` extra (``pip install 'tiergate[train]'``) holds the dependencies of training and its
benchmarks that serving does not need; the CLI's training commands import this package inside the command,
so a serving install without them fails with that line rather than a traceback.
"""
