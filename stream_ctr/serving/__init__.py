"""Serving: the ``POST /v1/score`` contract, its validation, ranking in batches and the exposure record
(:mod:`.scoring`), and a small HTTP client of the API (:mod:`.client`).

Layer 6: may import experiments (the arm assignment), learning, models and contracts; not the Faust agents.
"""
