"""Engine: clock, market events and the one run loop shared by every mode."""
