"""The fused-MoE kernel family: our Triton kernel and its float32 reference (`kernel`, `align`), the config space
and the engines' defaults (`space`), one problem on the device (`problem`), whose kernel is timed (`backends`,
`engine_lookup`), and `FusedMoe`, the family as the sweep, its workers and the exporters see it (`family`)."""
