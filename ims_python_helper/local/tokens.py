"""Self-verifying bearer tokens for the local stack.

The token endpoint and the IMS server may run in different processes, so a
token carries everything needed to check it: who it was issued to, when it
expires, and an HMAC-SHA256 signature over both. The format is a compact
HS256 JWT, so clients that peek at ``exp`` (as they may with Keycloak tokens)
see what they expect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Callable, Dict, Optional

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks HMAC-SHA256-signed bearer tokens that carry their expiry.

    ``clock`` returns the current time in seconds since the epoch; tests pass
    their own to check expiry without sleeping.
    """

    def __init__(self, key: bytes, clock: Optional[Callable[[], float]] = None) -> None:
        if len(key) < 16:
            raise ValueError("token signing key must be at least 16 bytes")
        self._key = key
        self._clock: Callable[[], float] = clock or time.time

    def issue(self, client_id: str, lifetime: int) -> str:
        """Return a token for ``client_id`` that expires ``lifetime`` seconds from now.

        A lifetime of zero or less yields a token that is already expired.
        """
        now = int(self._clock())
        claims = {"sub": client_id, "azp": client_id, "iat": now, "exp": now + int(lifetime)}
        signing_input = _b64encode(json.dumps(_HEADER).encode()) + "." + _b64encode(json.dumps(claims).encode())
        return signing_input + "." + _b64encode(self._sign(signing_input))

    def verify(self, token: str) -> bool:
        """Return True when ``token`` was signed with this key and has not expired."""
        claims = self.claims(token)
        if claims is None:
            return False
        expiry = claims.get("exp")
        return isinstance(expiry, int) and self._clock() < expiry

    def claims(self, token: str) -> Optional[Dict[str, Any]]:
        """Return the claims of a correctly signed token (expired or not), else None."""
        parts = token.split(".")
        if len(parts) != 3 or not token.isascii():
            return None
        signing_input = parts[0] + "." + parts[1]
        try:
            signature = _b64decode(parts[2])
        except (binascii.Error, ValueError):
            return None
        # Constant-time comparison, so response timing says nothing about the key.
        if not hmac.compare_digest(signature, self._sign(signing_input)):
            return None
        try:
            claims = json.loads(_b64decode(parts[1]))
        except (binascii.Error, ValueError):
            return None
        return claims if isinstance(claims, dict) else None

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
