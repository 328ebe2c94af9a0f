"""`acts models list|show|promote`: the model registry of this home."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from backend.bundles.store import BundleStore
from backend.bundles.verify import read_manifest
from backend.clock import WallClock
from backend.config.compose import compose_with_hydra, validate_raw
from backend.home import Home, acts_home
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, show and promote registered models")
    action = models.add_subparsers(dest="action", required=True)
    action.add_parser("list", help="every registered model with its status")
    show = action.add_parser("show", help="a model's lineage record as JSON")
    show.add_argument("model")
    prom = action.add_parser("promote", help="promote a candidate when every gate holds")
    prom.add_argument("model")
    prom.add_argument("overrides", nargs="*", help="Hydra overrides for the gate bounds, e.g. training.promotion.min_auc=0.55")
    prom.add_argument("--author", required=True, help="who (logged in the model's history; required, no default)")
    prom.add_argument("--reason", default="operator promotion", help="why (logged)")
    models.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO, clock=None) -> int:
    """List, show or promote registered models."""
    registry = ModelRegistry.of_home(Home(acts_home()))
    if args.action == "list":
        records = registry.records()
        if not records:
            out.write(f"no models in {registry.root}\n")
        store = BundleStore.of_home(Home(acts_home()))
        active = store.state().active
        for key in store.installed():
            manifest, _ = read_manifest(store.folder(key))
            mark = "installed, active" if key == active else "installed"
            out.write(f"{manifest.model_version}  {mark}  bundle {key}\n")
        for record in records:
            aucs = [f["auc"] for f in record["fold_metrics"] if f["auc"] is not None]
            mean_auc = round(sum(aucs) / len(aucs), 4) if aucs else None
            out.write(f"{record['version']}  {record['status']:<9}  trigger {record['trigger']}  mean_auc {mean_auc}\n")
        return 0
    if args.action == "show":
        out.write(json.dumps(registry.load(args.model), indent=1, sort_keys=True) + "\n")
        return 0
    raw, _ = compose_with_hydra(args.overrides)
    bounds = validate_raw(raw).training.promotion
    clock = clock or WallClock()
    results = promote(registry, args.model, bounds, clock.now_ms(), args.reason, author=args.author)
    out.write(f"promoted {args.model}\n")
    for result in results:
        out.write(f"  passed {result.describe()}\n")
    return 0
