"""Self-made certificates for a loopback control plane (real ``openssl``).

One CA signs the API server's serving certificate and every client certificate; a client
certificate's CN is the user name and its O entries the groups (how the API server reads them).
The service-account key pair signs and verifies service-account tokens.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

OPENSSL = "openssl"


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class Authority:
    """A CA in ``dir`` (``ca.crt``, ``ca.key``) and the certificates it signs."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = dir / "ca.crt", dir / "ca.key"
        if not self.cert.exists():
            _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "30", "-subj", "/CN=forge-test-ca", cwd=dir)

    def issue(self, name: str, cn: str, groups: tuple[str, ...] = (), *, server_names: tuple[str, ...] = (),
              server_ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """Issue ``<name>.crt``/``<name>.key``: a client certificate, or a serving one with SANs."""
        subj = "".join(f"/O={g}" for g in groups) + f"/CN={cn}"
        _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subj, cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        if server_names or server_ips:
            sans = [f"DNS:{n}" for n in server_names] + [f"IP:{i}" for i in server_ips]
            ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                           f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={','.join(sans)}\n")
        else:
            ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                           "extendedKeyUsage=clientAuth\n")
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "30", "-extfile", ext.name, cwd=self.dir)
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def service_account_keys(dir: Path) -> tuple[Path, Path]:
    """``(sa.key, sa.pub)``: the key pair service-account tokens are signed and checked with."""
    _run("genrsa", "-out", "sa.key", "2048", cwd=dir)
    _run("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=dir)
    return dir / "sa.key", dir / "sa.pub"


def kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, *, user: str = "user",
               namespace: str = "default") -> Path:
    """A kubeconfig (context ``realplane``) authenticating with a client certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: realplane\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n"
        f"contexts:\n- name: realplane\n  context:\n    cluster: realplane\n    user: {user}\n"
        f"    namespace: {namespace}\n"
        "current-context: realplane\n", encoding="utf-8")
    return path
