"""What the CLI's commands do when they run Ansible: each function runs a playbook through
:mod:`hearth.runner` and returns what came back; :mod:`hearth.cli` parses options and prints.

The pure parts (monitoring configuration, plans, checks) stay in their own modules; only code that
drives ``ansible-runner`` lives here.
"""
