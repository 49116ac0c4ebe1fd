"""The one URL policy and the one redaction of Forge.

**Policy** (:func:`credential_problem`): a URL Forge is given (``gitops.repo``,
``binary_cache.url``, ``attic.endpoint``, ``verify[].http.url``, the provisioning files'
endpoints) or resolves at run time (a local clone's ``origin``) carries no credential. Anything
in a URL reaches process lists (``/proc/*/cmdline``), logs, reports, the JSON plan (which Nix
copies into the world-readable store) and the cached clone's ``.git/config``. So a URL with
user-info (``https://TOKEN@host/…``, ``https://user:TOKEN@host/…``) is refused, and the message
says how to pass the credential instead. The one exception is an SSH user name without a
password (``ssh://git@host/…``, and the scp-like ``git@host:org/repo``): that is an account, not
a secret.

**Redaction** (:func:`redact`): every message, hint, report, progress and log line goes through
it on its way out (:mod:`forgegen.console` and :mod:`forgegen.process` apply it), so a credential
that slipped into a URL anyway (say, in git's own error output) is shown as ``***``.

This module imports nothing from the package.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

REDACTED = "***"

CREDENTIAL_ADVICE = (
    "pass credentials outside the URL: for git, a credential helper (`git config credential.helper`), "
    "GIT_ASKPASS or an SSH key; for HTTP(S) and Nix, ~/.netrc or the tool's token variable "
    "(e.g. attic.token_env)")

_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
# scheme://USERINFO@ — user-info ends at the first '@' before the host; it holds no '/', '?', '#'.
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#@\s'\"<>]+)@")
# Well-known token shapes, wherever they appear (GitHub, GitLab, Slack-style bearer tokens).
_TOKEN_RE = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,})")


def userinfo(url: str) -> str | None:
    """The user-info of ``scheme://user-info@host/…`` (None without one; scp-like ``user@host:path``
    and local paths have none in this sense)."""
    if "://" not in url:
        return None
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = url.split("://", 1)[1].split("/", 1)[0]
    if "@" not in netloc:
        return None
    return netloc.rsplit("@", 1)[0]


def credential_problem(url: str) -> str | None:
    """Why ``url`` may not be used (it carries a credential), or None when it is fine."""
    info = userinfo(url)
    if info is None:
        return None
    scheme = url.split("://", 1)[0].lower()
    if scheme in _SSH_SCHEMES and ":" not in info:
        return None  # ssh://git@host/...: a user name, not a secret
    what = "a user name and password" if ":" in info else "a user name or token"
    return (f"the URL {redact(url)} carries {what} before the host, which would end up in process lists, "
            f"logs, reports and the plan; remove it and {CREDENTIAL_ADVICE}")


def redact(text: str) -> str:
    """``text`` with the user-info of every URL (an SSH user name stays) and well-known token
    shapes replaced by ``***``."""
    if "@" in text:
        text = _USERINFO_RE.sub(_redact_match, text)
    if "_" in text or "-" in text:
        text = _TOKEN_RE.sub(REDACTED, text)
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``) is this machine: ``localhost``, ``*.localhost``,
    127.0.0.0/8 or ``::1``. Names are not resolved."""
    import ipaddress

    name = host.strip()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _redact_match(match: re.Match[str]) -> str:
    scheme, info = match.group("scheme"), match.group("info")
    if scheme[:-3].lower() in _SSH_SCHEMES and ":" not in info:
        return match.group(0)
    return f"{scheme}{REDACTED}@"
