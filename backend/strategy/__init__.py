"""Strategy: state-graph schema compiler and guard expressions."""
