"""KEYS_DIR on disk: only the server's own user may enter it or read what is in it.

KEYS_DIR holds the private signing keys (`<kid>.pem`) and, unless SECRET_PEPPER
is set, the pepper (`pepper`). The directory is made with mode 0700 and every
such file with 0600. A directory or file that group or other may read, found
at start, is tightened (group and other lose every permission) and a warning
names it: a copy of KEYS_DIR is every client secret's key and, without
KEYS_PASSPHRASE, every signing key (docs/security.md#files-and-modes).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The files in KEYS_DIR that hold secrets (the pepper's name is fixed).
PEPPER_FILE = "pepper"


def ensure_keys_dir(keys_dir: str) -> Path:
    """KEYS_DIR, made with mode 0700 if it does not exist yet."""
    path = Path(keys_dir)
    if not path.is_dir():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode passes through the umask; set it exactly.
        os.chmod(path, DIR_MODE)
    return path


def private_file_mode(path: Path) -> int:
    """The permission bits of a file, following a symbolic link as open() would."""
    return stat.S_IMODE(path.stat().st_mode)


def _secret_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.glob("*.pem") if p.is_file())
    pepper = directory / PEPPER_FILE
    if pepper.is_file():
        files.append(pepper)
    return files


def tighten(path: Path) -> str | None:
    """Take every permission from group and other; say what changed, or None.

    A file we may not chmod (another owner, a read-only secret mount) is left
    as it is, with a warning: the server still runs.
    """
    mode = private_file_mode(path)
    if not mode & 0o077:
        return None
    tightened = mode & ~0o077
    try:
        os.chmod(path, tightened)
    except OSError as exc:
        log.warning(
            "%s has mode %04o (group or other may read it) and cannot be tightened: %s",
            path,
            mode,
            exc.strerror,
        )
        return None
    return f"{path} {mode:04o} -> {tightened:04o}"


def tighten_keys_dir(keys_dir: str) -> list[str]:
    """Tighten KEYS_DIR and its key and pepper files; returns what changed (logged).

    A KEYS_DIR that does not exist yet is left alone: whatever first writes
    into it makes it with mode 0700.
    """
    directory = Path(keys_dir)
    if not directory.is_dir():
        return []
    changed = [c for c in (tighten(p) for p in [directory, *_secret_files(directory)]) if c]
    if changed:
        log.warning("KEYS_DIR was readable by group or other; tightened: %s", "; ".join(changed))
    return changed
