"""Per-user learning, the core of the service: each user's click rate (:mod:`.rolling`), label correction
(:mod:`.correction`), the per-user head (:mod:`.heads`), its state and binary encoding (:mod:`.state`), drift
detection (:mod:`.drift`), isolating a poison record (:mod:`.isolation`) and the one test-then-train loop
(:mod:`.loop`) that the Faust worker and the offline replay both call.

Layer 2: may import contracts, models, quality, data.
"""
