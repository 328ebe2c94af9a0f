"""Run every drill and write the figures to ``docs/reliability.md`` (date, machine, load, counts)."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.drills.bundles import bundle_drill
from scripts.drills.faults import FaultDrill, fault_drill
from scripts.drills.fuzz import FuzzTarget, fuzz_all
from scripts.drills.killswitch import KillSwitchDrill, killswitch_drill
from scripts.drills.kills import KillDrill, control_drill, lake_drill, paper_drill, paper_reference, profile_drill

Say = Callable[[str], None]


def machine() -> str:
    """The machine line of the report: architecture, cores, Python, load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load} (loaded machine: up to 8 agents share 2 cores)")  # fmt: skip


def run_drills(run_dir: Path, work: Path, trials: int, examples: int, seed: int, say: Say) -> dict[str, Any]:
    """Run every drill; return their results."""
    say(f"SIGKILL drills, {trials} trials each")
    kills = [
        lake_drill("backfill", trials, seed, work / "backfill"),
        lake_drill("incremental ingest", trials, seed + 1, work / "ingest", seeded_n=150),
    ]
    say("paper runtime: uninterrupted reference")
    reference = paper_reference(run_dir, work / "paper", 6)
    kills.append(paper_drill(run_dir, trials, seed + 2, work / "paper", 6, reference))
    kills.append(profile_drill(trials, seed + 3, work / "profile"))
    kills.append(control_drill(trials, seed + 4, work / "control"))
    say("bundle install")
    kills.append(bundle_drill(trials, seed + 5, work / "bundle"))
    say("kill-switch drill")
    switch = killswitch_drill(reference[0], reference[1], work / "paper")
    say(f"fuzzing, {examples} cases a target")
    targets, fuzz_seconds = fuzz_all(examples, work / "fuzz")
    say("emulator faults")
    faults = fault_drill(work / "faults")
    return {"kills": kills, "switch": switch, "fuzz": targets, "fuzz_seconds": fuzz_seconds, "faults": faults}


def render(results: dict[str, Any], trials: int, examples: int, seed: int, started: datetime, seconds: float, where: str) -> str:
    """The Markdown page of the figures."""
    kills: Sequence[KillDrill] = results["kills"]
    switch: KillSwitchDrill = results["switch"]
    targets: Sequence[FuzzTarget] = results["fuzz"]
    faults: FaultDrill = results["faults"]
    lines = [
        "# Reliability drills",
        "",
        f"Written by `make drill` (`acts drill --trials {trials} --fuzz-examples {examples} --seed {seed}`) on "
        f"{started:%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s.",
        f"Machine: {where}.",
        "Governance section 11 asks for these drills before live capital. Every figure below is counted, not assumed: "
        "the goal is 0 lost, 0 duplicated and 0 torn, and the counts are reported whatever they are.",
        "",
        "## SIGKILL at random points",
        "",
        "Each trial kills a child process with SIGKILL at a point drawn from a seeded generator (after a random number "
        "of provider requests, acknowledged commits or actions, plus a random delay; for the paper runtime at a random "
        "event around an order and a random point of the event: before it, after journalling NEW, after sending, after "
        "the fills, before or after the commit; for a bundle install in a phase drawn as likely as each other: while "
        "copying the files, after a random number of them, while verifying the copy, switching or smoke-checking), "
        "restarts the work, and compares with an uninterrupted reference.",
        "",
        "| drill | trials | killed mid-work | lost | duplicated | torn | trials with 0/0/0 | seconds | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for drill in kills:
        notes = "; ".join(f"{k}: {v}" for k, v in sorted(drill.notes.items()))
        lines.append(f"| {drill.name} | {drill.trials} | {drill.killed} | {drill.lost} | {drill.duplicated} | {drill.torn} | "
                     f"{drill.identical} | {drill.seconds:.0f} | {notes} |")  # fmt: skip
    lines += [
        "",
        "Lost: a record the reference holds (or the child acknowledged) missing after the restart. Duplicated: a record "
        "held twice or not in the reference. Torn: an unreadable file or database, a failed integrity or hash-chain "
        "check, a stored value that differs, or state that disagrees with its own log. \"Killed mid-work\" counts the "
        "trials whose child died of the SIGKILL (the others finished first). The paper trials start from the journal "
        "kept just before an order event, so the kill finds open orders and positions; the notes count them. The "
        "bundle trials install a second release of the shipped bundle (`bundles/sim_v1/1.0.0`, the same files as "
        "version 1.1.0) over it with `acts bundle install`: right after the kill `state.json` must name the old or "
        "the new bundle, complete and verified against every file hash (a half-copied folder or a state naming one "
        "is torn); after the same install is run again, the active bundle, rollback stack, log and installed folders "
        "must equal the uninterrupted install's. The lake trials also compare the month files byte for byte with "
        "the uninterrupted lake (batch ids included); the notes count the restarts that differ.",
        "",
        "## Kill switch engaged with positions and open orders",
        "",
        f"At each of the {switch.engagements} order events of the recorded run, the paper runtime processed the event "
        "(the order placed and open), the operator engaged the kill switch, and the runtime processed 5 more events.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| engagements | {switch.engagements} |",
        f"| with open orders at the kill | {switch.with_open_orders} |",
        f"| with positions at the kill | {switch.with_positions} |",
        f"| open orders at the kill (sum) | {switch.open_orders_at_kill} |",
        f"| cancelled at the next event | {switch.cancelled_at_next_event} |",
        f"| of those, still open after the next event | {switch.left_open_after_next_event} |",
        f"| new-risk orders admitted after the kill (entries, re-entries) | {switch.new_risk_admitted_after_kill} |",
        f"| new-risk decisions denied after the kill | {switch.new_risk_denied_after_kill} |",
        f"| exit and scale-out orders sent after the kill | {switch.reductions_admitted_after_kill} |",
        f"| most events until no new risk is admitted (0: none from the next event) | {switch.max_events_until_no_new_risk} |",
        f"| seconds | {switch.seconds:.0f} |",
        "",
        "## Fuzzing (Hypothesis)",
        "",
        "Hostile values (wrong types, out-of-bound and huge integers, NaN and infinities, unicode, control characters, "
        "100,000-character strings) for every field of each target. Accepted: valid. Refused: a clear error naming the "
        "field, nothing written. No-op: a valid value that changes nothing, refused as such, nothing written. Unclear: "
        "anything else (the goal is 0).",
        "",
        "| target | fields | cases | accepted | refused | no-op | unclear |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        lines.append(f"| {t.name} | {t.fields} | {t.cases} | {t.accepted} | {t.refused} | {t.noop} | {len(t.unclear)} |")
    total = sum(t.cases for t in targets)
    lines.append(f"| **all** | {sum(t.fields for t in targets)} | **{total}** | | | | **{sum(len(t.unclear) for t in targets)}** |")
    lines += ["", f"{total} cases in {results['fuzz_seconds']:.0f} s."]
    lines += [f"- unclear: {u}" for t in targets for u in t.unclear[:5]]
    lines += [
        "",
        "## Emulator faults",
        "",
        "Every provider call under every fault the emulators inject (backfill, then an ingest with a 60-bar lookback). "
        "Handled: the lake is what it must be (the clean lake; without the hidden bars; with the revised close) and "
        "the fault left evidence. Evidence counts retries plus failed responses kept raw (transport faults), or the "
        "evidence records (quarantine, gap, late arrival, revision).",
        "",
        "| provider | fault | handled | retries | failed responses kept | evidence | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in faults.cases:
        lines.append(f"| {c.source} | {c.fault} | {'yes' if c.handled else '**no**'} | {c.retries} | {c.failed_responses} | "
                     f"{c.evidence} | {c.detail} |")  # fmt: skip
    lines += ["", f"{faults.handled} of {len(faults.cases)} provider cases handled.", ""]
    lines += [
        "### Broker faults",
        "",
        "The Kraken live broker (ccxt against the emulator's private API) with one fault on the first call of each "
        "private endpoint it uses: a market order submitted and its fill read back (AddOrder, OpenOrders, "
        "ClosedOrders), a resting order cancelled by the kill switch (CancelAll), an order under an unknown client id "
        "cancelled on start (OpenOrders, CancelOrder). Handled: no duplicate order on Kraken, every fill applied once "
        "(none when the order is refused), the journal agrees with Kraken, and `broker_events` carries the error class.",
        "",
        "| call | fault | handled | orders on Kraken | fills applied | error classes in the journal | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in faults.broker:
        lines.append(f"| {b.call} | {b.fault} | {'yes' if b.handled else '**no**'} | {b.orders} | {b.fills} | "
                     f"{', '.join(b.evidence) or 'none'} | {b.detail} |")  # fmt: skip
    lines += ["", f"{faults.broker_handled} of {len(faults.broker)} broker cases handled; the fault drill took {faults.seconds:.0f} s.", ""]
    return "\n".join(lines)


def write_page(path: Path, text: str) -> None:
    """Write the page atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def progress(message: str) -> None:
    print(f"[drill] {message}", file=sys.stderr, flush=True)


def now() -> datetime:
    return datetime.now(tz=UTC)
