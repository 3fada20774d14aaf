"""Dispatch: the pool of backends (slots, health, breakers), the retry rules, and the dispatcher that tries a
plan's targets in order.

    pool.py        BackendState, Pool, Lease     slots, queue, health; ``Pool.lease()`` pairs slot and verdict
    breaker.py     Breaker                       one circuit breaker per backend (a pure state machine)
    retry.py       RetryPolicy, retry_same, ...  retry and failover decisions (pure functions)
    dispatcher.py  Dispatcher, Served, Outbound  the loop over targets, streams supervised and continued
    gather.py      gather, assemble              a non-streaming answer gathered from a stream (first-token budget)
"""

from tiergate.dispatch.dispatcher import Attempts, Dispatcher, Outbound, Served
from tiergate.dispatch.pool import BackendState, Lease, Pool

__all__ = ["Attempts", "BackendState", "Dispatcher", "Lease", "Outbound", "Pool", "Served"]
