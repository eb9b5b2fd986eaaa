"""Online A/B experiments: who gets which arm (:mod:`.assignment`), which exposure a click answers
(:mod:`.attribution`), the experiment registry on Kafka (:mod:`.registry`), the statistics (:mod:`.stats`), the
report (:mod:`.report`) and the closed-loop simulation's users (:mod:`.simulate`).

Layer 5: may import broker (the registry topic), learning, quality, data, contracts.
"""
