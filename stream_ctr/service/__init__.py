"""Running the whole service: its processes (:mod:`.stack`), the demo on real clicks (:mod:`.demo`) and the
closed-loop A/B simulation against live workers (:mod:`.closed_loop`).

Layer 8 (top): may import anything, the Faust agents included.
"""
