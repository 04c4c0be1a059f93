"""Jobs: a kernel sweep, a flag search or an export, split into work units that any worker can claim.

`units` is the durable queue in the database (claim, lease, heartbeat, complete); job kinds and the worker
loop build on it. Nothing here imports torch, triton or the web layer.
"""
