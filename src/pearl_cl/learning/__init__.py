"""Learning one task and measuring it: the fit loop (with its step events), test-set counts,
the continual-learning metrics and the data-parallel helpers. The methods, the probes and the
engine build on it; it knows none of them."""
