"""Engine: the kernel. Market events, the compiled pipeline and the one run loop shared by every mode.

It imports config, features, strategy, execution and the audit records, and nothing above them.
"""
