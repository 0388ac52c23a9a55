"""``fststyle serve`` as one library call: check the address, load the models once, run the app on uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from fststyle.devices import resolve_device
from fststyle.errors import UserError

log = logging.getLogger("fststyle")

INSTALL_HINT = 'fststyle serve needs the serve extra: pip install "fststyle[serve]"'


def check_bind_address(host: str, allow_remote: bool) -> None:
    """Refuse an address other machines can reach unless ``allow_remote``; warn when it is allowed."""
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
    if loopback:
        return
    if not allow_remote:
        raise UserError(f"host={host} lets other machines reach this server, which has no login; "
                        "add --allow-remote (allow_remote=true) if you mean it, or keep host=127.0.0.1")
    log.warning("serving on %s: anyone who can reach this address can use this server and its CPU or GPU "
                "(there is no login); the Host and Origin checks still refuse other sites' pages", host)


def serve(models: Sequence[str | Path], *, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
          allowed_hosts: Sequence[str] = (), shipped: bool = True, device: str = "auto", tile: int | None = 1024,
          engines: dict | None = None, **settings: object) -> int:
    """Serve the page until Ctrl-C: ``models`` (names or files) and the shipped ones, each loaded once."""
    check_bind_address(host, allow_remote)
    try:
        import uvicorn

        from fststyle.serve.app import ServeSettings, create_app
        from fststyle.serve.registry import ModelRegistry
    except ImportError as error:
        raise UserError(f"{INSTALL_HINT} ({error.name} is missing)") from None
    options = ServeSettings(host=host, port=port, allowed_hosts=list(allowed_hosts), engines=dict(engines or {}),
                            **settings)
    registry = ModelRegistry(models, device=resolve_device(device), tile=tile, include_shipped=shipped)
    app = create_app(registry, options)
    shown = f"[{host}]" if ":" in host else host
    log.info("fststyle serve: http://%s:%d (models: %s; Ctrl-C stops it)", shown, port, ", ".join(registry.models))
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=options.max_upload_mb * 2**20)
    return 0
