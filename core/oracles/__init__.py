"""The oracles, apart from the paths they judge: ``invariants`` (the vectorized global
checks every run ends with) and ``world`` (pins, TLBs, swap dirtiness and counts,
device-page lifetime). Paths call into these; these never import a path."""
