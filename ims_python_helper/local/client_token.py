"""A bearer token from the stack's token endpoint, fetched the way IMS clients fetch one.

Used by ``local demo`` and ``local job`` to read IMS records back; kept apart
from both so that neither imports the other for it.
"""

from __future__ import annotations

from typing import Mapping


def fetch_token(env: Mapping[str, str]) -> str:
    """A bearer token from the stack's token endpoint: the real client-credentials exchange, as IMS clients do it."""
    import requests

    response = requests.post(
        env["OAUTH_CLIENT_ENDPOINT"],
        data={"grant_type": "client_credentials"},
        auth=(env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"]),
        timeout=10,
        verify=env.get("CA_CERT") or True,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
