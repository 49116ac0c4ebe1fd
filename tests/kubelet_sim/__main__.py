"""``python -m tests.kubelet_sim``: simulated kubelets against a real API server, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

from tests.kube_standin import Settings

from .sim import KubeletSim, node_names

TIMINGS = [f.name for f in dataclasses.fields(Settings) if f.type in ("float", float)]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.kubelet_sim", description=__doc__)
    p.add_argument("--kubeconfig", required=True, help="admin (or node) kubeconfig of the API server")
    p.add_argument("--context", help="kubeconfig context (default: current)")
    p.add_argument("--node", default="node", help="node name (with --nodes N > 1: NAME-1 … NAME-N)")
    p.add_argument("--nodes", type=int, default=1, help="how many nodes to simulate")
    p.add_argument("--bind", action="store_true", help="bind pending pods (no kube-scheduler runs)")
    p.add_argument("--address", default="127.0.0.1", help="node InternalIP; the log server listens there")
    p.add_argument("--tls-cert", help="serving certificate for the log endpoint (default: self-signed)")
    p.add_argument("--tls-key", help="its key")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds between Lease/status heartbeats")
    for name in TIMINGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=float, help=f"kubelet timing (Settings.{name}), seconds")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = Settings(**{n: getattr(args, n) for n in TIMINGS if getattr(args, n) is not None})
    sim = KubeletSim(args.kubeconfig, node_names(args.node, args.nodes), settings=settings, bind=args.bind,
                     context=args.context, address=args.address, heartbeat=args.heartbeat,
                     tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)

    async def run() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (setattr(sim, "stopping", True), task and task.cancel()))
        await sim.run()

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
