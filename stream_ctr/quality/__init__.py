"""How good a model is: metric functions (:mod:`.metrics`), the paired bootstrap over users (:mod:`.bootstrap`),
online metrics per arm at a bounded cost (:mod:`.online_metrics`) and choosing a correction method only once the
evidence is clear (:mod:`.auto`).

Layer 1: may import :mod:`stream_ctr.contracts`.
"""
