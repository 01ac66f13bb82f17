"""The repository wait: the job's token only to the IMS host and allow-listed hosts, and a timeout that holds.

The repositories are real servers on loopback: ``RepoServer`` over HTTPS
(trusted through a test CA) counts the requests that carried a bearer token;
``127.0.0.1`` is the IMS and token-endpoint host of the local stack and
``localhost`` (the same server, named differently) is "another host". The
timing cases put a port that refuses, a server that never answers, one that
answers after 30 s and one that trickles its headers in front of the wait.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from ims_python_helper.clients.oauth import ClientCredentialsSession, OAuthSettings, open_oauth_session
from ims_python_helper.local.repo_server import RepoServer
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.local.tls import LocalCA
from ims_python_helper.wait_for_kiwi_repos import ReposUnavailable, wait_for_kiwi_repos, wait_for_repos
from tests.faults.proxy import Fault, FaultProxy
from tests.support import kiwi_config

WAIT = "ims_python_helper.wait_for_kiwi_repos"
#: The wait's timeout in the timing cases, and the most it may overshoot.
TIMEOUT = 2.0
SLACK = 2.0


@pytest.fixture(scope="module")
def repo_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """A test CA for the HTTPS repository server (its certificate names 127.0.0.1 and localhost)."""
    return LocalCA(tmp_path_factory.mktemp("repo-ca"))


@pytest.fixture
def https_repos(repo_ca: LocalCA) -> Iterator[RepoServer]:
    """A package-repository server on https://127.0.0.1."""
    with RepoServer(ssl_context=repo_ca.server_context()) as server:
        yield server


@pytest.fixture
def session(stack: LocalStack, repo_ca: LocalCA) -> Iterator[ClientCredentialsSession]:
    """The job's OAuth session on the local stack, trusting the repository CA."""
    assert stack.tokens is not None
    oauth = OAuthSettings(stack.client_id, stack.client_secret, stack.tokens.url, str(repo_ca.ca_path))
    with open_oauth_session(oauth) as opened:
        yield opened


def on_localhost(url: str) -> str:
    """The same server's URL under the name ``localhost``: another host than IMS's 127.0.0.1."""
    return url.replace("://127.0.0.1:", "://localhost:", 1)


def recipe_naming(directory: Path, *repos: str) -> str:
    (directory / "config.xml").write_text(kiwi_config(*repos))
    return str(directory)


# -- where the token goes -------------------------------------------------------------


def test_the_token_goes_over_https_to_a_repository_on_the_ims_host(stack, https_repos, session, tmp_path):
    repo = https_repos.add("sles/15")
    assert repo.startswith("https://127.0.0.1:")

    wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url)

    assert https_repos.requests("sles/15") == 1 and https_repos.tokens("sles/15") == 1


def test_no_token_goes_to_another_host(stack, https_repos, session, tmp_path):
    repo = on_localhost(https_repos.add("sles/15"))

    wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url)

    assert https_repos.requests("sles/15") == 1 and https_repos.tokens("sles/15") == 0


def test_an_allow_listed_host_gets_the_token(stack, https_repos, session, tmp_path):
    repo = on_localhost(https_repos.add("sles/15"))

    wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url, token_hosts=("localhost",))

    assert https_repos.tokens("sles/15") == 1


def test_a_redirect_to_another_host_does_not_carry_the_token(stack, https_repos, session, tmp_path):
    target = on_localhost(https_repos.add("mirror/sles/15"))
    repo = https_repos.add("sles/15", redirect_to=target)

    repos = wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url)

    assert repos == [repo]
    assert https_repos.tokens("sles/15") == 1  # the IMS host got it
    assert https_repos.requests("mirror/sles/15") == 1 and https_repos.tokens("mirror/sles/15") == 0


def test_a_redirect_never_carries_the_token_to_another_host_even_an_allow_listed_one(
    stack, https_repos, session, tmp_path
):
    target = on_localhost(https_repos.add("mirror/sles/15"))
    repo = https_repos.add("sles/15", redirect_to=target)
    root = recipe_naming(tmp_path, repo)

    wait_for_repos(session, root, 10, ims_url=stack.ims.url, token_hosts=("localhost",))

    assert https_repos.tokens("sles/15") == 1
    assert https_repos.requests("mirror/sles/15") == 1 and https_repos.tokens("mirror/sles/15") == 0


def test_a_redirect_to_plain_http_on_the_same_host_does_not_carry_the_token(stack, https_repos, session, tmp_path):
    with RepoServer() as plain:
        target = plain.add("sles/15")
        repo = https_repos.add("sles/15", redirect_to=target)

        wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url)

        assert https_repos.tokens("sles/15") == 1
        assert plain.requests("sles/15") == 1 and plain.tokens_seen == 0


def test_plain_http_never_carries_the_token_even_to_the_ims_host(stack, repos, session, tmp_path):
    repo = repos.add("sles/15")
    assert repo.startswith("http://127.0.0.1:")

    wait_for_repos(session, recipe_naming(tmp_path, repo), 10, ims_url=stack.ims.url)

    assert repos.requests("sles/15") == 1 and repos.tokens_seen == 0


def test_the_cli_step_takes_the_allow_list_from_its_flag(run_cli, ims_api, https_repos, repo_ca, tmp_path):
    listed = on_localhost(https_repos.add("listed"))
    other = on_localhost(https_repos.add("other"))
    job = ims_api.new_job()
    root = recipe_naming(tmp_path, listed)

    result = run_cli(
        "recipe", "wait_for_repos", root, job, "--repo-token-hosts", "localhost", env={"CA_CERT": str(repo_ca.ca_path)}
    )
    assert result.code == 0, result.stderr
    assert https_repos.tokens("listed") == 1

    root = recipe_naming(tmp_path, other)
    result = run_cli("recipe", "wait_for_repos", root, job, env={"CA_CERT": str(repo_ca.ca_path)})
    assert result.code == 0, result.stderr
    assert https_repos.requests("other") == 1 and https_repos.tokens("other") == 0


def test_the_pod_script_takes_the_allow_list_from_the_environment(pod, https_repos, repo_ca, tmp_path):
    repo = on_localhost(https_repos.add("sles/15"))
    env = {"RECIPE_ROOT_PARENT": recipe_naming(tmp_path, repo), "CA_CERT": str(repo_ca.ca_path), "TIMEOUT": "30"}

    assert pod.run(WAIT, env=env).code == 0
    assert https_repos.tokens("sles/15") == 0

    waited = pod.run(WAIT, env=dict(env, IMS_REPO_TOKEN_HOSTS="packages.local, LOCALHOST"))
    assert waited.code == 0, waited.stderr
    assert https_repos.tokens("sles/15") == 1
    assert "probed with the job's token" in waited.stderr


@pytest.mark.parametrize("value", ["https://packages.local", "packages.local:443", "packages.local/repo"])
def test_an_allow_list_entry_that_is_not_a_host_name_is_a_usage_error(run_cli, ims_api, tmp_path, value):
    result = run_cli("recipe", "wait_for_repos", str(tmp_path), ims_api.new_job(), env={"IMS_REPO_TOKEN_HOSTS": value})

    assert result.code == 2
    assert "IMS_REPO_TOKEN_HOSTS: expected host names separated by commas" in result.stderr


# -- the timeout bounds the whole wait ---------------------------------------------------


class TricklingServer:
    """Answers every request with a status line, then one header byte every 0.2 s, for ever."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._connections: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
            while not self._stop.wait(0.2):
                connection.sendall(b"a")
        except OSError:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for connection in self._connections:
            connection.close()


def _refusing_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/sles/15"  # closed again: connections are refused


@pytest.fixture(params=["refused", "never answers", "answers after 30 s", "trickles its headers"])
def bad_repository(request: pytest.FixtureRequest, repos: RepoServer) -> Iterator[str]:
    """The URL of a repository that does not answer in time, in each of the ways one can fail to."""
    if request.param == "refused":
        yield _refusing_port()
    elif request.param == "trickles its headers":
        server = TricklingServer()
        yield f"{server.url}/sles/15"
        server.stop()
    else:
        with FaultProxy(repos.url, name="repo") as proxy:
            if request.param == "never answers":
                proxy.never_answer()
            else:
                proxy.add(Fault(action="hold", delay=30))
            yield f"{proxy.url}/{repos.add('sles/15').split('/', 3)[3]}"


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


@pytest.mark.wallclock
def test_the_wait_returns_within_its_timeout_whatever_the_repository_does(bad_repository, stack, session, tmp_path):
    root = recipe_naming(tmp_path, bad_repository)

    def wait() -> None:
        with pytest.raises(ReposUnavailable, match=f"after {TIMEOUT:g} s, 1 of 1 repositories still do not answer"):
            wait_for_repos(session, root, TIMEOUT, poll_interval=0.1, ims_url=stack.ims.url)

    assert _timed(wait) < TIMEOUT + SLACK


@pytest.mark.wallclock
def test_the_pods_call_returns_within_its_timeout_and_fails_the_job(
    bad_repository, pod, ims_api, tmp_path, monkeypatch
):
    for key, value in pod.env.items():
        monkeypatch.setenv(key, value)
    root = recipe_naming(tmp_path, bad_repository)
    codes = []

    def wait() -> None:
        codes.append(wait_for_kiwi_repos(pod.job_id, pod.env["IMS_URL"], None, root, TIMEOUT, logging.getLogger("t")))

    assert _timed(wait) < TIMEOUT + SLACK
    assert codes == [1]
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"


@pytest.mark.wallclock
def test_the_cli_step_returns_within_its_timeout(run_cli, ims_api, repos, tmp_path):
    with FaultProxy(repos.url, name="repo") as proxy:
        proxy.never_answer()
        root = recipe_naming(tmp_path, f"{proxy.url}/sles/15")
        job = ims_api.new_job()
        elapsed = _timed(lambda: run_cli("recipe", "wait_for_repos", root, job, "--repo-timeout", str(TIMEOUT)))
    assert elapsed < TIMEOUT + SLACK
    assert ims_api.get(f"/jobs/{job}")["status"] == "error"


# -- without a job ------------------------------------------------------------------------


def test_without_ims_job_id_the_wait_sets_no_status_and_returns_0(pod, repos, ims_api, tmp_path):
    repo = repos.add("sles/15", available_after=1)

    result = pod.run(WAIT, env={"RECIPE_ROOT_PARENT": recipe_naming(tmp_path, repo), "IMS_JOB_ID": None})

    assert result.code == 0, result.stderr
    assert "IMS_JOB_ID is not set: waiting for the repositories without reporting a job status" in result.stderr
    assert repos.requests("sles/15") == 2
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "creating"


def test_without_ims_job_id_a_wait_that_times_out_returns_1_and_sets_no_status(pod, repos, ims_api, tmp_path):
    down = repos.add("down", available_after=None)

    env = {"RECIPE_ROOT_PARENT": recipe_naming(tmp_path, down), "IMS_JOB_ID": None, "TIMEOUT": "0.5"}
    result = pod.run(WAIT, env=env)

    assert result.code == 1
    assert "1 of 1 repositories still do not answer" in result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "creating"
