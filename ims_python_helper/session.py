"""The OAuth2 entry points callers import from ``ims_python_helper.session`` (their place in earlier clients).

The session itself lives in ``clients/oauth.py``; this module keeps the names
and signatures callers fix: ``create_oauth_session``, ``get_admin_client_auth``,
``RequestLogger``, ``DEFAULT_TIMEOUT`` and the session classes. The admin
client's credentials are read through the option table (``config``), like
every other setting.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from .clients.oauth import (
    DEFAULT_OAUTH_CONFIG_DIR,
    BoundedRetry,
    ClientCredentialsSession,
    Deadline,
    OAuthSettings,
    RequestLogger,
    admin_credentials,
    build_retry,
    create_oauth_session,
    open_oauth_session,
)
from .clients.transport import DEFAULT_TIMEOUT
from .config import admin_client_auth


def get_admin_client_auth(logger: Optional[logging.Logger] = None) -> Tuple[str, str, str]:
    """Read the admin client's credentials: env vars first, then files in ``OAUTH_CONFIG_DIR``.

    Returns ``(client_id, client_secret, token_url)``; raises ``ConfigError`` when any is missing
    (or a mounted file is unreadable or larger than a secret can be).
    """
    oauth, config_dir = admin_client_auth()
    return admin_credentials(oauth, config_dir, logger)


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
