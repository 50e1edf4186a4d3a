"""``mbmix-fw plugins``: the installed plugins, their kinds, and any that failed to load, as a table or JSON
(``--verbose``: every config's fields, defaults and docs)."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..building.registry import Registry
    from .handlers import Registries


def cmd_plugins(args: argparse.Namespace, registries: Registries) -> int:
    registry = registries.get(warn=False)
    rows = _plugin_rows(registry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.verbose:
        _print_core_tables()
    print("plugins:")
    # Columns as wide as their longest entry (at least the usual width), so a long distribution name
    # (`mbmix-example-scheduler 0.1.0`) shifts the column instead of breaking it.
    name_width = max([16, *(len(info.name) for info in registry.plugins)])
    origin_width = max([24, *(len(info.origin or "(module)") for info in registry.plugins)])
    kind_width = max([20, *(len(kind) for slot in registry.slots for kind in slot.kinds())])
    for info in registry.plugins:
        kinds = "; ".join(f"{slot}: {', '.join(ks)}" for slot, ks in registry.kinds_of(info.name).items() if ks)
        print(f"  {info.name:<{name_width}} {info.origin or '(module)':<{origin_width}} "
              f"{kinds or '(registers nothing)'}")
    for slot in registry.slots:
        print(f"{slot.name}:")
        for kind in slot.kinds():
            entries = [e for e in slot.entries() if e.kind == kind]
            status = "  CONFLICT: " + slot.conflict_message(kind) if len(entries) > 1 else ""
            missing = entries[0].missing_dependency() if len(entries) == 1 else None
            if missing:  # registered, usable once its extra is installed
                status = f"  needs its extra: {missing.split(': ', 1)[-1]}"
            print(f"  {kind:<{kind_width}} from {', '.join(e.plugin.name for e in entries)}{status}")
            if args.verbose:
                for entry in entries:
                    _print_fields(entry.config)
        if not slot.kinds():
            print("  (none)")
    if registry.failures:
        print("broken:")
        for failure in registry.failures:
            print(f"  {failure.message}")
    return 0


def _print_fields(config: Any) -> None:
    from ..building.config_docs import describe_model

    for line in describe_model(config, indent="      "):
        print(line)


def _print_core_tables() -> None:
    """``[run]``, ``[policy]``, ``[critic]``, ``[optim]``: every recipe may hold them, all fields optional."""
    from ..building.config_docs import CORE_TABLES, describe_model

    print("core tables (optional in every recipe):")
    for table, model in CORE_TABLES.items():
        print(f"  [{table}]")
        for line in describe_model(model, indent="      "):
            print(line)


def _plugin_rows(registry: "Registry") -> list[dict[str, Any]]:
    """One JSON object per registered component plus one per failed plugin (status ``broken``); a kind
    whose optional extra is not installed has status ``needs_extra`` and the install hint as ``error``."""
    rows = []
    for slot in registry.slots:
        conflicts = slot.conflicts()
        for entry in slot.entries():
            broken = entry.kind in conflicts
            missing = None if broken else entry.missing_dependency()
            rows.append({
                "extension_point": slot.name, "kind": entry.kind, "plugin": entry.plugin.name,
                "distribution": entry.plugin.distribution,
                "status": "broken" if broken else "needs_extra" if missing else "ok",
                "error": slot.conflict_message(entry.kind) if broken else missing,
            })
    for failure in registry.failures:
        rows.append({
            "extension_point": failure.slot, "kind": None, "plugin": failure.plugin.name,
            "distribution": failure.plugin.distribution, "status": "broken", "error": failure.reason,
        })
    return rows
