"""The operator API above the runtime: what the console (and any client) calls; writes go through the stores."""
