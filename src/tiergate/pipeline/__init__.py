"""The pipeline of one request, between the edges (``api/`` parses and renders) and the backends:

    gateway.py  Caller, Plan, Outcome, Gateway    inspect and decide (plan), then hand the plan to dispatch
    policy.py   HardPolicy, PolicyVerdict         sovereignty and the guard: what a request may reach
    admit.py    Admission, Admitted               budgets and rate limits: the plan to dispatch, or a 429
    account.py  Account, ledger_row, Produced     when it ends: one ledger row, metrics, the budget settled
    build.py    build_gateway                     the resources, built once for the app and the CLI

A request flows edge -> inspect -> decide (``Gateway.plan``) -> admit (``Admission.admit``) -> dispatch
(``Gateway.complete`` / ``stream``, through :mod:`tiergate.dispatch`) -> account (``Account.record*``) -> render.
"""

from tiergate.pipeline.account import Account, Produced, ledger_row
from tiergate.pipeline.admit import Admission, Admitted
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Caller, Gateway, Outcome, Plan

__all__ = [
    "Account",
    "Admission",
    "Admitted",
    "Caller",
    "Gateway",
    "Outcome",
    "Plan",
    "Produced",
    "build_gateway",
    "ledger_row",
]
