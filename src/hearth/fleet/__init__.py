"""Day-2 work on a serving fleet: ad-hoc commands and support bundles over fabric
(:mod:`~hearth.fleet.connect`, :mod:`~hearth.fleet.execute`, :mod:`~hearth.fleet.collect`,
secrets scrubbed by :mod:`~hearth.fleet.scrub`), backup and restore through Ansible
(:mod:`~hearth.fleet.backup`). Each module is usable without the CLI."""
