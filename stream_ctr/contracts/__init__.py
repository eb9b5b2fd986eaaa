"""What crosses a process boundary, named once: the click event (:mod:`.events`), the arms of the service
(:mod:`.arms`) and the feature encoding shared by the stream and the offline evaluator (:mod:`.features`).

Layer 0: imports nothing else of stream_ctr.
"""
