"""A simulated SGLang server: same CLI flags, HTTP API and Prometheus metric names, no GPU.

Used for demos and for every end-to-end test of the tuner. Timings come from a roofline model of a
model profile on a GPU profile; nothing here imports torch or talks to a real engine.
"""
