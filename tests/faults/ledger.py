"""The counts the fault tests keep for RELIABILITY.md: faults injected, client runs, kills, records checked, losses.

Each test adds what it did with ``note(...)``; with ``IMS_FAULT_REPORT=PATH`` set
the totals are written to PATH as JSON when a fault test module finishes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Dict

#: Totals for this pytest session.
TOTALS: Counter = Counter()


def note(**counts: int) -> None:
    """Add to the totals, e.g. ``note(runs=2, faults=3)``."""
    TOTALS.update(counts)


def write_report() -> Dict[str, int]:
    """Write the totals to ``IMS_FAULT_REPORT`` (when set); returns them."""
    totals = dict(sorted(TOTALS.items()))
    path = os.environ.get("IMS_FAULT_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(totals, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return totals
