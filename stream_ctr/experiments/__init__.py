"""Online A/B experiments: who gets which arm (:mod:`.assignment`), which exposure a click answers
(:mod:`.attribution`), the experiment registry on Kafka (:mod:`.registry`), the statistics (:mod:`.stats`), the
exposures joined with their events (:mod:`.exposures`), the report (:mod:`.report`), off-policy estimates
(:mod:`.ope`, checked on the simulator by :mod:`.ope_sim`), Thompson-sampling allocation over epochs (:mod:`.bandit`,
declared by an experiment's ``bandit`` block, :mod:`.bandit_config`, and published epoch by epoch by
:mod:`.allocator`) and the closed-loop simulation's users (:mod:`.simulate`).

Layer 5: may import broker (the registry topic), learning, quality, data, contracts.
"""
