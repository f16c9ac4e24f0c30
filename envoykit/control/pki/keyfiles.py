"""Private key files: written with mode 0600 atomically, refused when others may read them."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 (parent made 0700), atomically by rename.

    With ``exclusive`` an existing file is left alone (first writer wins). Used for every key file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if exclusive and path.exists():
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if exclusive:
            with contextlib.suppress(FileExistsError):  # another process created it meanwhile
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_private(path: Path) -> bytes:
    """Read a key file, refusing one that group or others may read (it would have leaked).

    Raises:
        PermissionError: the file's mode allows access beyond its owner.
    """
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path}: mode {mode:o} lets others read a private key; chmod 600 it")
    return path.read_bytes()
