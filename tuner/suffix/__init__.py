"""Suffix-decoding parameter tuning by offline replay (`tuner suffix-replay`): recorded or synthetic traces
are replayed through a SuffixDecoding speculator on the CPU, parameter sets are swept and ranked by an
estimated decode speed-up, and the best become SGLang flag sets for a live flag search.

Nothing here starts an engine or imports the web layer.
"""
