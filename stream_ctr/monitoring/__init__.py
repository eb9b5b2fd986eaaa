"""What operators see: the Prometheus metrics of worker and trainer (:mod:`.prometheus`), the staleness of
the model in use (:mod:`.freshness`), the worker's working set of users (:mod:`.active_users`), the Grafana
dashboards generated from code (:mod:`.dashboards`) and the demo's timeline picture (:mod:`.timeline`).
No user id ever becomes a label.

Layer 6: may import learning, quality, contracts.
"""
