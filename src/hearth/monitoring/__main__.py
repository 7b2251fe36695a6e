"""``python -m hearth.monitoring dashboards [DIRECTORY]``: rewrite the Grafana dashboards' JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from hearth.monitoring.dashboards import write_dashboards

if __name__ == "__main__":
    if sys.argv[1:2] != ["dashboards"]:
        sys.exit("usage: python -m hearth.monitoring dashboards [DIRECTORY]")
    for written in write_dashboards(Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(written)
