"""The course opens in the real JupyterLab: server starts, serves the notebooks,
has the widgets extension.

A real ``jupyter lab`` process is started on a free loopback port with a random
token, and checked over HTTP the way a browser would talk to it:

* it answers ``/api/status`` (the server started);
* it refuses requests that carry no token (it is not open to anyone);
* its contents API lists every notebook in ``notebooks/`` and returns one as a
  notebook with cells (it serves the course);
* its extension API and the ``/lab`` page both know the ipywidgets front-end
  extension ``@jupyter-widgets/jupyterlab-manager``, enabled (the sliders in
  the notebooks can render);
* ``/lab`` serves the application page;
* ``POST /api/shutdown`` stops it (no server is left behind).

The user's own Jupyter configuration cannot interfere: the config and runtime
directories are empty temporary ones. The data path is left alone on purpose,
because that is where the ipywidgets lab extension is installed. Options that
would make the server reach the network at start (news feed, update check,
PyPI extension manager) are switched off.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from _jupyterlab import start_lab, stop

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PREFERRED_NOTEBOOK = "00_start_here.ipynb"
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"

SHUTDOWN_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (extra 'course')")


class LabServer(NamedTuple):
    base_url: str
    token: str
    process: subprocess.Popen
    log_path: Path


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


# --------------------------------------------------------------------------- helpers


def _request(
    server: LabServer | str,
    path: str,
    *,
    token: str | None = None,
    method: str = "GET",
    timeout: float = REQUEST_TIMEOUT_S,
) -> Response:
    """One HTTP request; HTTP error statuses are returned, not raised."""
    base_url = server if isinstance(server, str) else server.base_url
    headers = {"Authorization": f"token {token}"} if token else {}
    data = b"" if method == "POST" else None
    request = urllib.request.Request(
        base_url + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return Response(reply.status, reply.headers.get("Content-Type", ""), reply.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers.get("Content-Type", ""), error.read())


def _get(server: LabServer, path: str) -> Response:
    """An authenticated GET."""
    return _request(server, path, token=server.token)


def _log(server: LabServer) -> str:
    return server.log_path.read_text(encoding="utf-8", errors="replace")


def _lab_page_config(html: str) -> dict:
    """The JSON page config that ``/lab`` embeds for the front end."""
    match = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
        html,
        re.DOTALL,
    )
    assert match, "the /lab page has no jupyter-config-data block"
    return json.loads(match.group(1))


# --------------------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[LabServer]:
    """A real JupyterLab server on loopback, rooted at the repository.

    ``test_shutdown_stops_the_server`` (last in this file) stops it through the
    API; the finalizer only cleans up a server that is still running (a test
    failed, or that test was deselected).
    """
    tmp = tmp_path_factory.mktemp("jupyterlab")
    for name in ("config", "runtime"):
        (tmp / name).mkdir()
    env = dict(os.environ)
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    env.pop("JUPYTER_TOKEN", None)  # the token comes from the command line only
    running = start_lab(REPO_ROOT, tmp, env)
    server = LabServer(running.url, running.token, running.process, running.log_path)
    process, token = running.process, running.token
    try:
        yield server
    finally:
        if process.poll() is None:
            try:
                _request(server, "/api/shutdown", token=token, method="POST", timeout=5)
                process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
            finally:
                stop(process)


# --------------------------------------------------------------------------- tests


def test_server_reports_its_status(lab):
    reply = _get(lab, "/api/status")
    assert reply.status == 200
    status = reply.json()
    assert "started" in status and "kernels" in status, status


def test_requests_without_token_are_refused(lab):
    reply = _request(lab, "/api/contents/notebooks")
    assert reply.status in (401, 403), (
        f"/api/contents answered {reply.status} without a token: the server is open"
    )
    wrong = _request(lab, "/api/contents/notebooks", token=secrets.token_hex(16))
    assert wrong.status in (401, 403), f"a wrong token was accepted ({wrong.status})"


def _course_notebooks() -> list[str]:
    names = sorted(path.name for path in NOTEBOOKS_DIR.glob("*.ipynb") if path.is_file())
    assert names, f"{NOTEBOOKS_DIR} holds no notebook"
    return names


def test_contents_api_lists_every_course_notebook(lab):
    expected = _course_notebooks()  # before the request: files may be added meanwhile
    reply = _get(lab, "/api/contents/notebooks")
    assert reply.status == 200, reply.body[:500]
    listing = reply.json()
    assert listing["type"] == "directory"
    listed = {item["name"]: item["type"] for item in listing["content"]}
    missing = [name for name in expected if name not in listed]
    assert not missing, f"not listed by the server: {missing}; listed: {sorted(listed)}"
    not_notebooks = {name: listed[name] for name in expected if listed[name] != "notebook"}
    assert not not_notebooks, f"listed but not as notebooks: {not_notebooks}"


def test_contents_api_returns_a_notebook_with_cells(lab):
    names = _course_notebooks()
    name = PREFERRED_NOTEBOOK if PREFERRED_NOTEBOOK in names else names[0]
    reply = _get(lab, f"/api/contents/notebooks/{urllib.parse.quote(name)}")
    assert reply.status == 200, reply.body[:500]
    model = reply.json()
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert isinstance(cells, list) and cells, f"{name} came back with no cells"


def test_widgets_extension_is_installed_and_enabled(lab):
    reply = _get(lab, "/lab/api/extensions")
    if reply.status == 404:  # no extension manager API: fall back to the page config
        config = _lab_page_config(_get(lab, "/lab").body.decode("utf-8"))
        names = [ext["name"] for ext in config.get("federated_extensions", [])]
        assert WIDGETS_EXTENSION in names, names
        assert WIDGETS_EXTENSION not in config.get("disabledExtensions", [])
        return
    assert reply.status == 200, reply.body[:500]
    extensions = {ext["name"]: ext for ext in reply.json()}
    assert WIDGETS_EXTENSION in extensions, (
        f"{WIDGETS_EXTENSION} is not known to JupyterLab; found {sorted(extensions)}"
    )
    widgets = extensions[WIDGETS_EXTENSION]
    assert widgets["installed"] is True, widgets
    assert widgets["enabled"] is True, widgets
    assert widgets.get("status", "ok") == "ok", widgets


def test_lab_page_is_served_and_loads_the_widgets_extension(lab):
    reply = _get(lab, "/lab")
    assert reply.status == 200
    assert reply.content_type.startswith("text/html"), reply.content_type
    config = _lab_page_config(reply.body.decode("utf-8"))
    loaded = [ext["name"] for ext in config.get("federated_extensions", [])]
    assert WIDGETS_EXTENSION in loaded, f"the page would not load the widgets: {loaded}"
    assert WIDGETS_EXTENSION not in config.get("disabledExtensions", [])


def test_shutdown_stops_the_server(lab):
    """Keep last: the server is gone afterwards."""
    reply = _request(lab, "/api/shutdown", token=lab.token, method="POST")
    assert reply.status == 200, reply.body[:500]
    try:
        code = lab.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {SHUTDOWN_TIMEOUT_S:.0f} s after /api/shutdown")
    assert code == 0, f"exit code {code}\n--- server log ---\n{_log(lab)}"
    with pytest.raises(OSError):  # nothing listens on the port any more
        _request(lab, "/api/status", token=lab.token, timeout=2.0)
