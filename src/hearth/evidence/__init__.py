"""Audit evidence: what makes an audit report something an auditor can file.

- :mod:`~hearth.evidence.header`: who ran the audit, from where, when, with which Hearth and
  against which declared state, and each host's identity;
- :mod:`~hearth.evidence.controls`: the site's control catalogue (``audit_controls.yml``) mapped
  to Hearth's checks;
- :mod:`~hearth.evidence.store`: reports kept under ``$HEARTH_HOME/audits/`` with a retention;
- :mod:`~hearth.evidence.diff`: what changed between two reports, per host;
- :mod:`~hearth.evidence.signing`: signing a report and verifying it (the bundles' OpenSSH
  signatures) and its HTML rendering.

The report itself (its JSON, JUnit and HTML forms) is :mod:`hearth.report`. See docs/audit.md.
"""

from __future__ import annotations

REPORT_FORMAT = "hearth-audit-report/1"
"""The ``format`` field of every report this Hearth writes; a file without it is not a report."""
