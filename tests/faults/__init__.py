"""Fault injection over real sockets: a proxy that fails requests on purpose, and a switch that kills clients.

- ``proxy``: ``FaultProxy`` and ``Fault`` (status answers, lost answers, dropped or
  hung connections, delays, bandwidth limits, the server going down and up).
- ``crash``: ``KillSwitch`` and ``plan_kill_points`` (SIGKILL at chosen moments).
- ``front``: ``ProxiedStack`` (the local stack behind three proxies) and checks on what is stored.
- ``ledger``: the counts the fault tests report for RELIABILITY.md.
"""
