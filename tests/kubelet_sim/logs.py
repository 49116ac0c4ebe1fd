"""The kubelet's HTTPS endpoint for container logs, where the API server's ``pods/log`` goes.

A real API server answers ``GET .../pods/NAME/log`` by proxying to
``https://<node address>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/NS/POD/CONTAINER``
with the query (``previous``, ``tailLines``, ``timestamps``, ``limitBytes``, ``sinceSeconds``,
``follow``). It verifies the kubelet's certificate only when started with
``--kubelet-certificate-authority``; otherwise any certificate does, so by default this server
makes a self-signed one (``openssl``). Client certificates (``--kubelet-client-certificate``) are
accepted and not required. Errors are answered as the kubelet does: status 400 and the message
as plain text, which the API server passes on as a ``BadRequest`` Status.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tests.kube_standin import ApiError

if TYPE_CHECKING:
    from .sim import KubeletSim


def self_signed(directory: Path, address: str) -> tuple[str, str]:
    """A certificate and key for ``address`` (an IP), written into ``directory``."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=kubelet-sim",
                    "-addext", f"subjectAltName=IP:{address}"], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def _select(lines: list[tuple[str, str]], q: dict) -> str:
    if q.get("sinceSeconds"):
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=int(q["sinceSeconds"]))
        lines = [(ts, line) for ts, line in lines
                 if datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")) >= since]
    if q.get("tailLines") is not None:
        n = int(q["tailLines"])
        lines = lines[-n:] if n > 0 else []
    stamped = q.get("timestamps") in ("true", "1")
    text = "".join(f"{ts} {line}\n" if stamped else f"{line}\n" for ts, line in lines)
    if q.get("limitBytes"):
        text = text.encode()[: int(q["limitBytes"])].decode(errors="ignore")
    return text


class LogServer:
    def __init__(self, sim: KubeletSim, address: str, tls: tuple[str, str] | None) -> None:
        self.sim, self.address, self.tls = sim, address, tls
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    async def start(self) -> int:
        cert, key = self.tls or (None, None)
        if cert is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kubelet-sim-")
            cert, key = await asyncio.to_thread(self_signed, Path(self._tmp.name), self.address)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_NONE
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, 0, ssl_context=ctx)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        q = dict(request.query)
        previous = q.get("previous") in ("true", "1")
        pod = self.sim.cluster.store.find("pods", ns, name)
        if pod is None:
            return web.Response(status=404, text=f'pod "{name}" in namespace "{ns}" not found')
        kubelet = self.sim.kubelet
        try:
            lines = kubelet.read_log(pod, container, previous)
        except ApiError as e:
            return web.Response(status=e.code, text=e.message)
        if q.get("follow") not in ("true", "1") or previous:
            return web.Response(text=_select(lines, q), content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(_select(lines, q).encode())
        sent = len(lines)
        while True:  # follow: the current instance, until it ends
            run = kubelet.pods.get(pod["metadata"]["uid"])
            c = run.containers.get(container) if run else None
            if c is None or not c.running:
                break
            await asyncio.sleep(0.1)
            lines = kubelet.read_log(pod, container, False)
            if len(lines) > sent:
                await resp.write(_select(lines[sent:], {"timestamps": q.get("timestamps")}).encode())
                sent = len(lines)
        await resp.write_eof()
        return resp
