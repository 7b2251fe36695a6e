"""``python -m hearth.frontdoor --config /etc/hearth/frontdoor/config.json``: serve the front door.

Exits 2 naming the file when the configuration, the keys file or the routing file is unusable
(the container then restarts and ``docker logs`` says why); refuses to start without any API key.
``SIGHUP`` (``docker kill --signal HUP hearth-frontdoor``) reloads the three files in place.
With ``tls: {cert, key}`` in config.json it serves HTTPS only (a new certificate needs a restart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hearth.frontdoor.config import FrontDoorConfig, Loaded


def server_options(config: FrontDoorConfig) -> dict[str, Any]:
    """uvicorn's options for ``config``: where to listen, and HTTPS when it has a certificate."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 30,
    }
    if config.tls_cert is not None and config.tls_key is not None:
        options["ssl_certfile"] = str(config.tls_cert)
        options["ssl_keyfile"] = str(config.tls_key)
    return options


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth-frontdoor", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("/etc/hearth/frontdoor/config.json"))
    parser.add_argument("--check", action="store_true", help="Check the files and exit.")
    args = parser.parse_args(argv)

    from hearth.frontdoor.config import ConfigError, load_all

    def load() -> Loaded:
        return load_all(args.config)

    try:
        loaded = load()
    except ConfigError as e:
        print(f"hearth-frontdoor: {e}", file=sys.stderr)
        return 2
    config, keys = loaded.config, loaded.keys
    if not keys:
        print(
            f"hearth-frontdoor: {config.keys_file}: no API key, refusing to serve", file=sys.stderr
        )
        return 2
    if args.check:
        print(f"hearth-frontdoor: {len(config.models)} model(s), {len(keys)} key(s): ok")
        return 0

    import uvicorn

    from hearth.frontdoor.app import create_app

    app = create_app(config, keys, load=load, digests=loaded.digests)
    uvicorn.run(app, **server_options(config))
    return 0


if __name__ == "__main__":
    sys.exit(run())
