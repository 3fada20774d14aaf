"""The event loop's lag: how late a timer fires is how long the loop was kept from it.

Every callback of every request runs on one loop; work that holds it (a parse, a scan, a serialisation of a
large body) delays all the others. A task sleeps ``interval_s`` again and again and records how much later than
asked it woke (``tiergate_event_loop_lag_seconds``, ``tiergate_event_loop_lag_max_seconds``): a hold of ``H``
seconds shows as a lag of at least ``H - interval_s``.

A timer is also late when the machine gives the process no CPU (other processes, a CPU quota). The part of a
lag the process spent on a CPU, ``min(lag, CPU time of the process meanwhile)``, is this process's own work
holding the loop (``tiergate_event_loop_busy_seconds``); the rest was waiting for a CPU.
"""

from __future__ import annotations

import asyncio
import time

from tiergate.accounting.metrics import Metrics


async def watch_loop_lag(metrics: Metrics, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    worst = 0.0
    while True:
        asked, cpu = loop.time() + interval_s, time.process_time()
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - asked)
        metrics.loop_lag.observe(lag)
        metrics.loop_busy.observe(min(lag, time.process_time() - cpu))
        if lag > worst:
            worst = lag
            metrics.loop_lag_max.set(lag)
