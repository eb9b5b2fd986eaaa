"""Faust agents of stream-ctr. Thin: they move records between topics and call :mod:`stream_ctr`.

- :mod:`agents.app`: the one place a Faust app is configured (``create_app``) and the state codec is registered.
- :mod:`agents.personalize`: per-user test-then-train, dead letters, the HTTP views.
- :mod:`agents.trainer`: the global model's trainer (its own consumer group).
- :mod:`agents.snapshots`: reading and following ``ctr.model``.
"""
