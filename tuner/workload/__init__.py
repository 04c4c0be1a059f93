"""Observability-driven tuning: learn a workload model from an engine's own metrics (Prometheus, scraped
`/metrics` snapshots, request logs), replay it, and watch live traffic for drift from it.

Nothing here launches an engine or runs a search; a drift only queues a re-tune job.
"""
