"""The key files of a backup, sealed with a passphrase: scrypt derives an SM4 key, SM4-GCM seals them.

The keys are what make a stolen backup readable, so they never enter the archive in clear. The
key files of ``<data_dir>/keys`` are packed into an in-memory tar, which is encrypted as one
SM4-GCM message (:func:`rhip.security.crypto.sm4_encrypt`) under a key derived from the
passphrase by scrypt (RFC 7914, from ``hashlib``). The salt and the scrypt cost go into the
manifest, so a later RHIP can open an older backup; a wrong passphrase and an altered member
both fail GCM's authentication, and are reported as such.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
from pathlib import Path
from typing import Any

from rhip.errors import InvalidRequest
from rhip.ops.archive import BackupError
from rhip.security.crypto import sm4_decrypt, sm4_encrypt
from rhip.security.keys import KEY_KINDS

#: Name of the sealed keys member.
KEYS_MEMBER = "keys.sealed"
#: scrypt cost: OWASP's minimum for scrypt (N=2^17, r=8, p=1): 128 MiB of memory and, on a busy
#: 2-core machine, under a second per backup, verify or restore; what makes guessing expensive.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
#: The largest scrypt N a manifest may ask for (8 x the default: 1 GiB of memory at r=8).
_MAX_N = 2**20
#: Bound to the ciphertext as associated data: these bytes only open as backup keys.
_AAD = b"rhip-backup-keys-v1"


def _derive(passphrase: bytes, params: dict[str, Any]) -> bytes:
    """The 128-bit SM4 key scrypt derives from the passphrase with the manifest's parameters."""
    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    if not (2 <= n <= _MAX_N and 1 <= r <= 32 and 1 <= p <= 16):  # a manifest is input: bound its cost
        raise BackupError(f"{KEYS_MEMBER}: scrypt parameters out of range (n={n}, r={r}, p={p})")
    salt = bytes.fromhex(params["salt"])
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=16)


def key_files(data_dir: Path) -> list[Path]:
    """The key files of a data directory (``keys/<kind>/v<N>.key``), never a temporary file."""
    root = data_dir / "keys"
    return sorted(p for kind in KEY_KINDS for p in (root / kind).glob("v*.key") if p.is_file())


def seal_keys(data_dir: Path, passphrase: bytes) -> tuple[bytes, dict[str, Any]]:
    """The sealed key files of ``data_dir`` and the parameters that open them again."""
    packed, paths = io.BytesIO(), key_files(data_dir)
    with tarfile.open(fileobj=packed, mode="w") as tar:
        for path in paths:
            tar.add(path, arcname=path.relative_to(data_dir / "keys").as_posix())
    params: dict[str, Any] = {
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": secrets.token_hex(16),
        "cipher": "SM4-GCM",
        "files": len(paths),
    }
    return sm4_encrypt(_derive(passphrase, params), packed.getvalue(), _AAD), params


def open_keys(sealed: bytes, params: dict[str, Any], passphrase: bytes) -> dict[str, bytes]:
    """The key files as ``{"sm4/v1.key": contents}``; BackupError for a wrong passphrase or altered keys."""
    try:
        packed = sm4_decrypt(_derive(passphrase, params), sealed, _AAD)
    except InvalidRequest:
        raise BackupError(
            f"{KEYS_MEMBER}: the passphrase does not open the keys "
            "(wrong passphrase, or the member was altered)"
        ) from None
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if member.isfile() and handle is not None:
                files[member.name] = handle.read()
    return files


def write_keys(files: dict[str, bytes], data_dir: Path) -> None:
    """Put opened key files under ``<data_dir>/keys`` as the key ring keeps them (0600; folders 0700)."""
    root = data_dir / "keys"
    for name, data in sorted(files.items()):
        kind, _, file_name = name.partition("/")
        if kind not in KEY_KINDS or "/" in file_name or not file_name.endswith(".key"):
            raise BackupError(f"{KEYS_MEMBER}: unexpected entry {name!r}")
        folder = root / kind
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
