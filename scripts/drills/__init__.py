"""Reliability drills (`acts drill`, `make drill`): figures for crashes, faults and bad input.

- :mod:`scripts.drills.kills`: SIGKILL at random points of backfill, incremental ingest, the paper
  runtime, a profile commit and a kill-switch engage (and :mod:`scripts.drills.bundles`: a bundle
  install); each trial is restarted and compared with an uninterrupted reference, counting lost,
  duplicated and torn records.
- :mod:`scripts.drills.killswitch`: the kill switch engaged while positions and open orders exist.
- :mod:`scripts.drills.fuzz`: Hypothesis over every config field, profile key and CLI argument.
- :mod:`scripts.drills.faults`: emulator faults for every provider call.
- :mod:`scripts.drills.report`: runs them and writes ``docs/reliability.md``.

The children the SIGKILL drills kill run product code (the CLI, the stores, the paper runtime) through the
small functions named ``*_child`` here, which the tests also call in-process. Children are started from a
forkserver that imported the product once, so a trial costs milliseconds to start.
"""
