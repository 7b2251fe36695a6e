"""Everything Hearth refuses before any host is touched, in one place.

Used by ``hearth check``, ``hearth up`` and ``hearth audit`` on the control node, and by the
``hearth_inventory_check`` action plugin at the start of every playbook, so plain
``ansible-playbook`` refuses the same things:

1. the inventory against the roles' argument specs (file, line, key, value, what is expected);
2. driver / CUDA / GPU-architecture / kernel compatibility of the GPU layer's pins;
3. the declared models: every engine argument is one the engine really has;
4. the VRAM plan: every declared model fits, no GPU is shared past 100 %.

Each step runs only when the one before it passed: a later check on a broken inventory would
only repeat the first error in other words.
"""

from __future__ import annotations

from pathlib import Path

from hearth.errors import InvalidInputError
from hearth.inventory import Inventory, InventoryInvalid, check_inventory


def preflight(
    inventory: Path | str,
    vault_password_file: Path | None = None,
    *,
    use_facts: bool = True,
) -> Inventory:
    """Load and check ``inventory``; raise an :class:`InvalidInputError` (exit 2) on any refusal."""
    from hearth import compat, engines, plan

    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    compat.raise_for_inventory(inv)
    placements = plan.plan_loaded(inv, use_facts=use_facts)
    engines.check_engine_args([p.model for p in placements.placements])
    placements.raise_for_refusals()
    return inv


def problems(inventory: Path | str, vault_password_file: Path | None = None) -> list[str]:
    """The same checks as :func:`preflight`, as lines of text (empty when all pass)."""
    try:
        preflight(inventory, vault_password_file)
    except InventoryInvalid as exc:
        return [str(p) for p in exc.problems]
    except InvalidInputError as exc:
        return [exc.message]
    return []
