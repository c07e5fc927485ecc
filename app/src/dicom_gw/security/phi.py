"""PHI at rest: pgcrypto encryption and a blind index, with a key kept outside the database.

Patient name, ID and birth date are encrypted with ``pgp_sym_encrypt`` inside PostgreSQL, so a
database dump or a stolen disk without the key file reveals nothing. Exact lookup by Patient ID
uses a keyed hash (HMAC-SHA256) of the identifier: equal IDs give equal hashes, but the hash
cannot be reversed or recomputed without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

# pgcrypto options for pgp_sym_encrypt. pgcrypto's default S2K (mode 3) hashes the passphrase
# tens of thousands of times to slow down guessing a human password; the passphrase here is a
# random 256-bit key that cannot be guessed, so the iterations only made every decrypt cost
# 0.1-0.3 ms of CPU (a name search decrypts every patient: seconds at 1 M instances). Salted S2K
# without iteration (mode 1) keeps a fresh salt per value; AES-256 matches the key's strength.
# pgp_sym_decrypt reads the options from each message, so values written before still decrypt.
PGP_OPTIONS = "cipher-algo=aes256, s2k-mode=1"


class PhiKeyError(RuntimeError):
    pass


@dataclass(frozen=True)
class PhiKey:
    secret: bytes

    @property
    def passphrase(self) -> str:
        """The pgcrypto passphrase (the key's hex form: pgcrypto takes text)."""
        return self.secret.hex()

    def blind_index(self, *parts: str) -> bytes:
        message = "\\".join(parts).encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).digest()


def load_phi_key(path: Path) -> PhiKey:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise PhiKeyError(f"cannot read the PHI key file {path}: {exc.strerror}") from exc
    try:
        secret = bytes.fromhex(text)
    except ValueError as exc:
        raise PhiKeyError(f"{path} must hold the key as hex") from exc
    if len(secret) < 32:
        raise PhiKeyError(f"{path} must hold at least 32 bytes of key")
    return PhiKey(secret)


def create_phi_key(path: Path) -> None:
    """Write a fresh random key, readable by its owner only, unless one exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32) + "\n")
