"""Online A/B experiments: who gets which arm (:mod:`.assignment`) and what the arms' results say
(:mod:`.stats`)."""
