"""The floor every figure is compared with: a bare aiohttp server that answers a constant 200.

It imports the same three libraries the agent needs (``aiohttp.web``, ``redis.asyncio``, ``prometheus_client``)
and nothing of ``agent``, then serves ``/livez``, ``/readyz`` and ``/metrics`` with constant bodies, the way
the agent's server is set up (``AppRunner`` without an access log). So:

* its requests/s is what a constant response costs in aiohttp on this machine (figure 2's baseline);
* its RSS, start time and idle CPU are the floor for the agent's footprint (figure 3);
* ``--import MODULE`` adds one more library (``kubernetes``, ``google.cloud.logging_v2.handlers``), to price
  an optional feature the same way, by difference.

Run as ``python -m bench.bare_server --port N``. It prints ``listening`` once the socket is bound and runs
until killed (the bench always kills it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal

import aiohttp.web as web
import prometheus_client  # noqa: F401 (imported for its cost: part of the floor)
import redis.asyncio  # noqa: F401 (imported for its cost: part of the floor)


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _serve(port: int) -> None:
    app = web.Application()
    for path in ("/livez", "/readyz", "/metrics"):
        app.router.add_get(path, _ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    print("listening", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse ``--port`` and ``--import``, import the extras, serve until a signal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")
    args = parser.parse_args()
    for name in args.imports:
        importlib.import_module(name)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
