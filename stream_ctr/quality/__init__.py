"""How good a model is: metric functions, probability clipping and logloss included (:mod:`.metrics`), the paired
bootstrap over users (:mod:`.bootstrap`), the scored rows behind every windowed gAUC (:mod:`.rows`), online metrics
per arm at a bounded cost (:mod:`.online_metrics`) and choosing a correction method only once the evidence is
clear (:mod:`.auto`).

Layer 1: may import :mod:`stream_ctr.contracts`.
"""
