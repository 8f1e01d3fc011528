#!/usr/bin/env python3
"""Run the TensorZero HTTP gateway that ships inside the `tensorzero` PyPI package.

Used by loadtest/compare_nginx.sh (phase 7).

    tensorzero_gateway.py CONFIG.toml

The PyPI package is TensorZero's Python client, but its native extension
contains the gateway itself (the same Rust code as the standalone gateway)
and can serve it over HTTP on a loopback port; the package uses this for
`tensorzero.patch_openai_client`.  This script starts that gateway with the
given configuration, prints

    READY http://127.0.0.1:PORT/openai/v1

on stdout (the port is chosen by the gateway) and keeps it running until
SIGTERM or SIGINT.  The OpenAI-compatible endpoint is
`<that URL>/chat/completions`, with `"model": "tensorzero::model_name::NAME"`.
Exits 2 if the installed package has no HTTP gateway.
"""

import signal
import sys


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # Block the signals before the gateway's threads start, so they inherit
    # the mask and sigwait() below receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import tensorzero

    start = getattr(tensorzero, "_start_http_gateway", None)
    if start is None:
        print("this tensorzero package has no HTTP gateway (_start_http_gateway)", file=sys.stderr)
        return 2
    gateway = start(
        config_file=sys.argv[1],
        clickhouse_url=None,
        postgres_url=None,
        valkey_url=None,
        async_setup=False,
    )
    print("READY", gateway.base_url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
