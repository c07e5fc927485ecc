"""PHI at rest: pgcrypto encryption and a blind index, with a key kept outside the database.

Patient name, ID and birth date are encrypted with ``pgp_sym_encrypt`` inside PostgreSQL, so a
database dump or a stolen disk without the key file reveals nothing. Exact lookup by Patient ID
uses a keyed hash (HMAC-SHA256) of the identifier: equal IDs give equal hashes, but the hash
cannot be reversed or recomputed without the key. Substring search on Patient Name uses keyed
hashes of the name's trigrams (``name_grams``) to narrow the patients to decrypt; what that
reveals is written down in docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# pgcrypto options for pgp_sym_encrypt. pgcrypto's default S2K (mode 3) hashes the passphrase
# tens of thousands of times to slow down guessing a human password; the passphrase here is a
# random 256-bit key that cannot be guessed, so the iterations only made every decrypt cost
# 0.1-0.3 ms of CPU (a name search decrypts every patient: seconds at 1 M instances). Salted S2K
# without iteration (mode 1) keeps a fresh salt per value; AES-256 matches the key's strength.
# pgp_sym_decrypt reads the options from each message, so values written before still decrypt.
PGP_OPTIONS = "cipher-algo=aes256, s2k-mode=1"

# Name search: any substring of at least NAME_GRAM_LENGTH characters has all its trigrams among
# the name's, so a GIN index on the hashed trigrams finds every candidate without decrypting.
# Hashes are cut to 32 bits (int4 keeps the index small); a collision only adds a candidate that
# the decrypt-and-compare step then drops, never loses a match. Its own key (derived from the PHI
# key) keeps these hashes unrelated to the Patient ID blind index.
NAME_GRAM_LENGTH = 3
_NAME_GRAM_CONTEXT = b"dicom-gw patient-name trigram v1"


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

    @cached_property
    def _name_gram_key(self) -> bytes:
        return hmac.new(self.secret, _NAME_GRAM_CONTEXT, hashlib.sha256).digest()

    def name_grams(self, text: str | None) -> list[int]:
        """The keyed 32-bit hashes of ``text``'s lower-cased trigrams, sorted and unique.

        Lower-cased because the search is case-insensitive (ILIKE); the whole Person Name value
        is used, component separators (``^``, ``=``) included, so a search for ``DOE^J`` is
        narrowed as well as one for ``DOE``. Shorter than a trigram gives no hashes.
        """
        folded = (text or "").lower()
        gram_key = self._name_gram_key
        hashes = {
            int.from_bytes(
                hmac.new(gram_key, folded[i : i + NAME_GRAM_LENGTH].encode(), "sha256").digest()[
                    :4
                ],
                "big",
                signed=True,
            )
            for i in range(len(folded) - NAME_GRAM_LENGTH + 1)
        }
        return sorted(hashes)


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
