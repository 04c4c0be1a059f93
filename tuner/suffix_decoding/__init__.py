"""SuffixDecoding itself: the suffix tree, the speculator over a request's tree and the global tree, its
parameters, and the traces it is replayed on. Shared by the offline replay (tuner/suffix) and the simulated
engine's SUFFIX and NGRAM speculation (tuner/runtime/sim), so both measure acceptance with one model."""
