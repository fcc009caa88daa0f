"""The parts of a tuning study (`walkforward.tune` is its driver)."""
