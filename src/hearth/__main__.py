from __future__ import annotations

from hearth.cli import main

main()
