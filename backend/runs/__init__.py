"""Runs: what composes a run above the kernel, the models and the audit records.

Get the bars, get a model (trained, or from a bundle or the registry), drive the engine over them and
write the run folder and its report. Backtest, replay, audit diff, candidate evaluation, the training
schedule and the paper runtime all go through here; nothing below this layer imports it.
"""
