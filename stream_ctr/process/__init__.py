"""Processes and ports on this machine: children that die with their parent (:mod:`.children`) and local
ports handed over without races (:mod:`.net`).

Layer 0: imports nothing else of stream_ctr.
"""
