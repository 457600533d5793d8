"""gpuctl's own SSH key pair: created once under settings.keys_dir, private part 0600.

The public half is what gets registered on the cloud account; the fingerprint (MD5,
colon-hex of the key blob) is how DigitalOcean names keys, so we look it up by that
before ever creating a second copy.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

KEY_NAME = "digitalocean_ed25519"  # both DO profiles share it; AWS keeps its own


def key_paths(keys_dir: Path) -> tuple[Path, Path]:
    private = Path(keys_dir) / KEY_NAME
    return private, private.with_name(KEY_NAME + ".pub")


def md5_fingerprint(public_line: str) -> str:
    """DigitalOcean's key fingerprint: MD5 of the base64-decoded blob, colon-hex."""
    blob = base64.b64decode(public_line.split()[1])
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write path atomically unless it exists; False when another process won the race."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if path exists: never clobber a key in use
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _public_from_private(private: Path) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    line = key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return line.decode() + " gpuctl"


def ensure_keypair(keys_dir: Path) -> tuple[Path, str]:
    """(private key path, public key line), generating an ed25519 pair on first use."""
    private, public = key_paths(keys_dir)
    private.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(private.parent, 0o700)
    if not private.exists():
        # cryptography ships with paramiko; its OpenSSH format is what ssh and paramiko read.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        _write_new(private, pem, 0o600)
    if private.stat().st_mode & 0o077:
        os.chmod(private, 0o600)
    if public.exists():
        line = public.read_text(encoding="utf-8").strip()
        if len(line.split()) >= 2:
            return private, line
    line = _public_from_private(private)
    _write_new(public, (line + "\n").encode(), 0o644)
    return private, line
