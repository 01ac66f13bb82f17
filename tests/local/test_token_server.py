"""The local OAuth2 client-credentials endpoint and its self-verifying tokens, over real HTTP."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Iterator

import pytest
import requests
import trustme
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from ims_python_helper.local.token_server import STATS_PATH, TokenServer
from ims_python_helper.local.tokens import TokenSigner
from tests.support import Client

GRANT = {"grant_type": "client_credentials"}


def test_grant_with_basic_auth_returns_a_bearer_token_the_signer_accepts(
    token_server: TokenServer, signer: TokenSigner, client: Client
) -> None:
    response = requests.post(token_server.url, data=GRANT, auth=client.auth, timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert signer.verify(body["access_token"])
    claims = signer.claims(body["access_token"])
    assert claims is not None and claims["sub"] == client.id


def test_grant_with_credentials_in_the_form_body(
    token_server: TokenServer, signer: TokenSigner, client: Client
) -> None:
    form = dict(GRANT, client_id=client.id, client_secret=client.secret)
    response = requests.post(token_server.url, data=form, timeout=5)

    assert response.status_code == 200
    assert signer.verify(response.json()["access_token"])


def test_url_is_the_keycloak_shaped_token_path(token_server: TokenServer) -> None:
    assert token_server.url.startswith("http://127.0.0.1:")
    assert token_server.url.endswith("/keycloak/realms/shasta/protocol/openid-connect/token")


@pytest.mark.parametrize("wrong", ["secret", "id", "empty secret"])
def test_wrong_credentials_by_basic_auth_get_401_invalid_client(
    token_server: TokenServer, client: Client, wrong: str
) -> None:
    auth = {
        "secret": (client.id, "wrong-secret"),
        "id": ("someone-else", client.secret),
        "empty secret": (client.id, ""),
    }[wrong]
    response = requests.post(token_server.url, data=GRANT, auth=auth, timeout=5)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert token_server.grants_issued == 0


def test_wrong_secret_in_the_form_body_gets_401_invalid_client(token_server: TokenServer, client: Client) -> None:
    form = dict(GRANT, client_id=client.id, client_secret="nope")
    response = requests.post(token_server.url, data=form, timeout=5)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_no_credentials_at_all_get_401(token_server: TokenServer) -> None:
    response = requests.post(token_server.url, data=GRANT, timeout=5)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_other_grant_types_get_400_unsupported_grant_type(token_server: TokenServer, client: Client) -> None:
    form = {"grant_type": "password", "username": "u", "password": "p"}
    response = requests.post(token_server.url, data=form, auth=client.auth, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_stats_count_granted_tokens_only(token_server: TokenServer, client: Client) -> None:
    stats_url = token_server.base_url + STATS_PATH
    assert requests.get(stats_url, timeout=5).json() == {"grants": 0}

    requests.post(token_server.url, data=GRANT, auth=client.auth, timeout=5)
    requests.post(token_server.url, data=GRANT, auth=(client.id, "bad"), timeout=5)
    requests.post(token_server.url, data=GRANT, auth=client.auth, timeout=5)

    assert requests.get(stats_url, timeout=5).json() == {"grants": 2}
    assert token_server.grants_issued == 2


def test_get_on_the_token_path_is_405_and_unknown_paths_404(token_server: TokenServer) -> None:
    assert requests.get(token_server.url, timeout=5).status_code == 405
    assert requests.post(token_server.base_url + "/nope", data=GRANT, timeout=5).status_code == 404


def test_stop_is_idempotent_and_releases_the_port(signer: TokenSigner, client: Client) -> None:
    server = TokenServer({client.id: client.secret}, signer)
    server.start()
    url = server.url
    server.stop()
    server.stop()

    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=GRANT, auth=client.auth, timeout=5)


# --------------------------------------------------------------------------- TLS, and the client library


@pytest.fixture
def tls_token_server(signer: TokenSigner, client: Client, tmp_path: Path) -> Iterator[tuple]:
    """A token server behind TLS with a trustme CA; yields the server and the CA bundle path."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = TokenServer({client.id: client.secret}, signer, ssl_context=context)
    server.start()
    yield server, ca_path
    server.stop()


def test_tls_endpoint_serves_tokens_to_requests_oauthlib(
    tls_token_server: tuple, signer: TokenSigner, client: Client
) -> None:
    server, ca_path = tls_token_server
    assert server.url.startswith("https://")

    session = OAuth2Session(client=BackendApplicationClient(client_id=client.id))
    token = session.fetch_token(
        token_url=server.url, client_id=client.id, client_secret=client.secret, verify=str(ca_path), timeout=5
    )

    assert signer.verify(token["access_token"])


def test_tls_endpoint_refuses_clients_that_do_not_trust_its_ca(tls_token_server: tuple, client: Client) -> None:
    server, _ = tls_token_server
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(server.url, data=GRANT, auth=client.auth, timeout=5)


# --------------------------------------------------------------------------- the token format


def test_token_from_another_key_is_refused(signer: TokenSigner) -> None:
    other = TokenSigner(b"a different key of enough length")
    assert not signer.verify(other.issue("some-client", 60))


def test_expired_token_is_refused_and_clock_decides_expiry() -> None:
    now = [1_000_000.0]
    signer = TokenSigner(b"0123456789abcdef0123", clock=lambda: now[0])
    token = signer.issue("some-client", 10)

    assert signer.verify(token)
    now[0] += 10
    assert not signer.verify(token)


def test_zero_lifetime_token_is_already_expired(signer: TokenSigner) -> None:
    assert not signer.verify(signer.issue("some-client", 0))


def test_tampered_token_is_refused(signer: TokenSigner) -> None:
    header, payload, signature = signer.issue("some-client", 60).split(".")
    forged_claims = TokenSigner(b"attacker key of sufficient size").issue("admin", 10**6).split(".")[1]

    assert not signer.verify(f"{header}.{forged_claims}.{signature}")
    assert not signer.verify(f"{header}.{payload}.{signature[:-2]}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "...", "ä.ö.ü", "x" * 5000])
def test_garbage_tokens_are_refused_without_error(signer: TokenSigner, garbage: str) -> None:
    assert not signer.verify(garbage)


def test_short_signing_keys_are_rejected() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"short")
