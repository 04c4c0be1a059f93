"""Load generation for serving benchmarks: workloads (what to send), arrivals (when), the asyncio client
(sending and timing), and the summary (bench_serving-style figures). No engine is started here.
"""
