"""Where the CLI finds its server and admin credentials (docs/cli.md#authentication).

`--profile NAME` (or `CCSERVER_PROFILE`) reads that profile of the profile
file and nothing else. Without one, `CCSERVER_URL`, `CCSERVER_CLIENT_ID`,
`CCSERVER_CLIENT_SECRET` (and the optional `CCSERVER_AUDIENCE`,
`CCSERVER_CA_BUNDLE`) are read, and a setting none of them gives comes from
the file's `default` profile when the file exists.

The file holds client secrets, so it is refused unless only its owner may
read it (mode 0600 or stricter), as ssh refuses a readable private key.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from app.remote.errors import UsageError

ENV = {
    "url": "CCSERVER_URL",
    "client_id": "CCSERVER_CLIENT_ID",
    "client_secret": "CCSERVER_CLIENT_SECRET",
    "audience": "CCSERVER_AUDIENCE",
    "ca_bundle": "CCSERVER_CA_BUNDLE",
}
PROFILE_KEYS = frozenset(ENV)
DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Settings:
    """One server and the admin client that manages it."""

    url: str
    client_id: str
    client_secret: str
    #: The management audience to ask for (RFC 8707 `resource`); None: the
    #: client's first audience, which is the management API's for an admin
    #: made by `admin create` or the bootstrap.
    audience: str | None = None
    ca_bundle: str | None = None

    def __repr__(self) -> str:
        # Never the secret, whatever prints this object.
        return f"Settings(url={self.url!r}, client_id={self.client_id!r})"


def config_path(environ: dict[str, str]) -> Path:
    """$CCSERVER_CONFIG, else ccserver/config.yaml under $XDG_CONFIG_HOME or ~/.config."""
    if environ.get("CCSERVER_CONFIG"):
        return Path(environ["CCSERVER_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "ccserver" / "config.yaml"


def _read_profiles(path: Path) -> dict[str, Any]:
    """The file's `profiles` mapping.

    :raise UsageError: the file is readable by others, unreadable or malformed.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise UsageError(
            f"{path}: mode {mode:04o} lets other users read the client secrets in it;"
            f" run `chmod 600 {path}`"
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read it as YAML ({type(exc).__name__})") from exc
    profiles = document.get("profiles") if isinstance(document, dict) else None
    if not isinstance(profiles, dict):
        raise UsageError(f"{path}: expected a top-level `profiles:` mapping of name to settings")
    return profiles


def _profile(path: Path, name: str) -> dict[str, str]:
    profiles = _read_profiles(path)
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        known = ", ".join(sorted(str(k) for k in profiles)) or "none"
        raise UsageError(f"--profile: no profile {name!r} in {path} (profiles: {known})")
    unknown = sorted(str(k) for k in profile if k not in PROFILE_KEYS)
    if unknown:
        raise UsageError(
            f"{path}: profile {name!r}: unknown setting {unknown[0]!r}"
            f" (known: {', '.join(sorted(PROFILE_KEYS))})"
        )
    for key, value in profile.items():
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{path}: profile {name!r}: {key} must be a string")
    return {k: v for k, v in profile.items() if v}


def load_settings(profile: str | None, environ: dict[str, str]) -> Settings:
    """The settings of this run.

    :raise UsageError: a missing setting, profile or file, or a bad URL.
    """
    path = config_path(environ)
    profile = profile or environ.get("CCSERVER_PROFILE") or None
    values: dict[str, str]
    if profile is not None:
        if not path.exists():
            raise UsageError(f"--profile: the profile file {path} does not exist")
        values = _profile(path, profile)
        source = f"profile {profile!r} in {path}"
    else:
        values = {key: environ[var] for key, var in ENV.items() if environ.get(var)}
        if len(values.keys() & {"url", "client_id", "client_secret"}) < 3 and path.exists():
            profiles = _read_profiles(path)
            if DEFAULT_PROFILE in profiles:
                values = {**_profile(path, DEFAULT_PROFILE), **values}
        source = "the environment (" + ", ".join(ENV[k] for k in ("url", "client_id")) + ", ...)"
    missing = [key for key in ("url", "client_id", "client_secret") if not values.get(key)]
    if missing:
        names = ", ".join(ENV[key] for key in missing)
        raise UsageError(
            f"no {missing[0].replace('_', ' ')} for the server: set {names}"
            f" or use --profile (see docs/cli.md); looked in {source}"
        )
    return Settings(
        url=check_url(values["url"]),
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        audience=values.get("audience"),
        ca_bundle=values.get("ca_bundle"),
    )


def check_url(url: str) -> str:
    """The server's base URL without a trailing slash.

    :raise UsageError: not an http(s) URL with a host, or one with a query.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"CCSERVER_URL: must be the server's http(s) base URL, such as https://auth.example.com"
            f" (got {url!r})"
        )
    if parts.query or parts.fragment or parts.username:
        raise UsageError("CCSERVER_URL: must not hold a query, fragment or user name")
    return url.strip().rstrip("/")


def is_loopback(url: str) -> bool:
    """Whether a URL names this machine (plain http is fine there)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
