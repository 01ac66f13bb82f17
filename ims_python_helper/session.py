"""The OAuth2 entry points callers import from ``ims_python_helper.session`` (their place in earlier clients).

The session itself lives in ``clients/oauth.py``; this module keeps the names
and signatures callers fix: ``create_oauth_session``, ``get_admin_client_auth``,
``RequestLogger``, ``DEFAULT_TIMEOUT`` and the session classes.
"""

from __future__ import annotations

from .clients.oauth import (
    DEFAULT_OAUTH_CONFIG_DIR,
    BoundedRetry,
    ClientCredentialsSession,
    Deadline,
    OAuthSettings,
    RequestLogger,
    build_retry,
    create_oauth_session,
    get_admin_client_auth,
    open_oauth_session,
)
from .clients.transport import DEFAULT_TIMEOUT

__all__ = [
    "DEFAULT_OAUTH_CONFIG_DIR",
    "DEFAULT_TIMEOUT",
    "BoundedRetry",
    "ClientCredentialsSession",
    "Deadline",
    "OAuthSettings",
    "RequestLogger",
    "build_retry",
    "create_oauth_session",
    "get_admin_client_auth",
    "open_oauth_session",
]
