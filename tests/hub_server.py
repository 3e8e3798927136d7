"""A loopback Hugging Face Hub for tests: the real `huggingface_hub` client and `transformers` talk to it over HTTP.

It serves the part of the Hub API that pushing and pulling a model or a Space uses (create a repo, commit files,
repo info, file tree, download), keeps every repo in memory, and answers "regular" upload for every file (no LFS,
no Xet), so a commit carries the files' content itself.

```python
with HubServer() as server, pytest.MonkeyPatch.context() as monkeypatch:
    point_client_at(monkeypatch, server.url, cache_dir=tmp_path / "hub_cache", token=server.token)
    HfApi().create_repo("me/tiny")
    HfApi().upload_folder(repo_id="me/tiny", folder_path=folder)
    server.files("me/tiny")  # {"config.json": b"...", "model.safetensors": b"..."}
```

In tests, the `hub_server`, `dead_endpoint` and `silent_endpoint` fixtures of `tests/conftest.py` do this set-up;
`server.requests` lists every request the server received.

Supported: repo types model, dataset and space; the branch "main" (a revision is "main" or a commit sha of its
history); public and private repos (a private repo is visible to the server's token only). Not supported: other
branches, pull requests, LFS, Xet.
"""

import base64
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse


USER = "kd-hf-tester"
TOKEN = "hf_kdhftestertoken"
REPO_TYPES = ("model", "dataset", "space")
# How the Hub spells each repo type in API routes (`/api/models/...`) and in web/download URLs (`/datasets/...`).
_API_KINDS = {f"{repo_type}s": repo_type for repo_type in REPO_TYPES}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?---[ \t]*(\n|\Z)", re.DOTALL)


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file's content: what the Hub reports as a regular file's `oid` and `ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    """One commit on "main": its sha (40 hex digits), its summary line and the whole tree after it."""

    sha: str
    summary: str
    files: dict[str, bytes]


@dataclass
class HubRepo:
    """A repo as the server keeps it; `commits` run from the empty initial commit (oldest) to the head."""

    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class HubError(Exception):
    """An error response in the Hub's format: the status, the `X-Error-Code` the client maps to an exception
    (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), `X-Error-Message`, and `{"error": message}`."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> JSONResponse:
        headers = {"X-Error-Message": self.message.encode("ascii", "backslashreplace").decode(), **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def card_data(readme: bytes) -> dict | None:
    """The YAML front matter of a README (None if it has none); raises `ValueError` if it is not a YAML mapping."""
    match = _FRONT_MATTER.match(readme.decode("utf-8", errors="replace"))
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError as error:
        raise ValueError(f"Invalid YAML in README.md front matter: {error}") from error
    if data is not None and not isinstance(data, dict):
        raise ValueError("README.md front matter must be a YAML mapping")
    return data or {}


def _file_entry(path: str, content: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}


def _folder_entry(commit: Commit, path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest()}


def _tree(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing of `path` ("" for the root): its folders first, then its files, each sorted; with
    `recursive`, everything below it."""
    prefix = f"{path}/" if path else ""
    below = sorted(name for name in commit.files if name.startswith(prefix))
    if path and not below:
        raise HubError(404, f"Folder {path!r} does not exist at {commit.sha}", "EntryNotFound")
    folders, files = set(), []
    for name in below:
        parts = name[len(prefix) :].split("/")
        if recursive or len(parts) == 1:
            files.append(_file_entry(name, commit.files[name]))
        depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
    return [_folder_entry(commit, folder) for folder in sorted(folders)] + files


class HubServer:
    """The loopback Hub: a FastAPI app served by uvicorn in a background thread on a free port of 127.0.0.1.

    Use it as a context manager, or call `start()` and `stop()`. `url` is the endpoint to give the client
    (`HF_ENDPOINT`, `HfApi(endpoint=...)`, or `point_client_at`); `token` is the one token it accepts (requests
    without a token may read public repos; a wrong token is refused with 401).
    """

    def __init__(self, token: str = TOKEN, user: str = USER):
        self.token, self.user = token, user
        self.url = ""
        self._repos: dict[tuple[str, str], HubRepo] = {}
        self.requests: list[str] = []  # "METHOD /path" of every request, oldest first
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- Life cycle -------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        """Serve on a free loopback port; returns once the server accepts connections."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError("the loopback Hub server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- What tests read back ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every repo and every request."""
        with self._lock:
            self._repos.clear()
            self.requests.clear()

    def repo(self, repo_id: str, repo_type: str = "model") -> HubRepo:
        """The stored repo (its privacy, Space SDK and commit history); `KeyError` if it does not exist."""
        with self._lock:
            return self._repos[repo_type, repo_id]

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """The files at the head of "main", path in repo -> content."""
        return dict(self.repo(repo_id, repo_type).head.files)

    # --- Requests -----------------------------------------------------------------------------------------------

    def _authorized(self, request: Request, required: bool = False) -> bool:
        """Whether the request carries the server's token; a wrong token (or none, when `required`) is a 401."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            if required:
                raise HubError(401, "Invalid username or password.")
            return False
        if authorization != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _find(self, request: Request, repo_type: str, repo_id: str, write: bool = False) -> HubRepo:
        authorized = self._authorized(request, required=write)
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _url(self, repo: HubRepo) -> str:
        return f"{self.url}/{_URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    @staticmethod
    def _commit(repo: HubRepo, revision: str, branch_only: bool = False) -> Commit:
        """The commit `revision` names: "main" (its head) or, unless `branch_only`, a sha of its history."""
        if revision == "main":
            return repo.head
        if not branch_only:
            for commit in repo.commits:
                if commit.sha == revision:
                    return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _info(self, repo: HubRepo, commit: Commit) -> dict:
        """The repo info JSON (`/api/{type}s/{id}`) that `ModelInfo`, `DatasetInfo` and `SpaceInfo` parse."""
        info = {
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if "README.md" in commit.files:
            try:
                info["cardData"] = card_data(commit.files["README.md"])
            except ValueError:
                pass  # the Hub still serves a repo whose card does not parse, without card data
        if repo.sdk is not None:
            info["sdk"] = repo.sdk
        return info

    def _create(self, request: Request, body: dict) -> JSONResponse:
        self._authorized(request, required=True)
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        if repo_type == "space" and not body.get("sdk"):
            raise HubError(400, "A Space needs an sdk")
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                message = f"You already created this {repo_type} repo"
                url = self._url(self._repos[repo_type, repo_id])
                return JSONResponse({"error": message, "url": url}, status_code=409)
            repo = HubRepo(repo_type, repo_id, body.get("visibility") == "private", body.get("sdk"))
            repo.commits.append(Commit(secrets.token_hex(20), "initial commit", {}))
            self._repos[repo_type, repo_id] = repo
        return JSONResponse({"url": self._url(repo), "name": repo_id})

    def _apply_commit(self, repo: HubRepo, revision: str, lines: list[dict]) -> Commit:
        """Apply an NDJSON commit payload (a `header` line, then `file`, `deletedFile`, `deletedFolder` lines)."""
        parent = self._commit(repo, revision, branch_only=True)
        header = lines[0]["value"] if lines and lines[0].get("key") == "header" else None
        if header is None:
            raise HubError(400, "A commit payload starts with a header line")
        if header.get("parentCommit") not in (None, parent.sha):
            raise HubError(412, f"Parent commit {header['parentCommit']} is not the head of {revision}")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"].strip("/")
            if key == "file":
                files[path] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                inside = [name for name in files if name.startswith(f"{path}/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for name in inside:
                    del files[name]
            else:
                raise HubError(400, f"The test Hub does not handle {key!r} commit lines (only regular uploads)")
        commit = Commit(secrets.token_hex(20), header.get("summary", ""), files)
        with self._lock:
            repo.commits.append(commit)
        return commit

    def _download(self, request: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        repo = self._find(request, repo_type, repo_id)
        commit = self._commit(repo, revision)
        if path not in commit.files:
            message = f"Entry not found: {path} at {revision}"
            raise HubError(404, message, "EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        content = commit.files[path]
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{git_blob_sha1(content)}"',
            "Content-Length": str(len(content)),
            "Content-Type": "application/octet-stream",
        }
        return Response(None if request.method == "HEAD" else content, headers=headers)

    def _app(self) -> FastAPI:
        """The routes, each the Hub's own (see `huggingface_hub/hf_api.py` and `file_download.py`)."""
        app = FastAPI()

        @app.exception_handler(HubError)
        async def hub_error(request: Request, error: HubError) -> JSONResponse:
            return error.response()

        @app.middleware("http")
        async def record(request: Request, call_next):
            with self._lock:
                self.requests.append(f"{request.method} {request.url.path}")
            return await call_next(request)

        def repo_type_of(kind: str) -> str:
            if kind not in _API_KINDS:
                raise HubError(404, f"Unknown repo kind {kind!r}")
            return _API_KINDS[kind]

        @app.get("/api/whoami-v2")
        async def whoami(request: Request) -> dict:
            self._authorized(request, required=True)
            return {
                "type": "user",
                "name": self.user,
                "fullname": "kd_hf tester",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "kd_hf tests", "role": "write"}},
            }

        @app.post("/api/repos/create")
        async def create_repo(request: Request) -> JSONResponse:
            return self._create(request, await request.json())

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request) -> JSONResponse:
            try:
                card_data((await request.json())["content"].encode())
            except ValueError as error:
                return JSONResponse({"errors": [{"message": str(error)}], "warnings": []}, status_code=400)
            return JSONResponse({"errors": [], "warnings": []})

        @app.get("/api/{kind}/{namespace}/{name}")
        @app.get("/api/{kind}/{namespace}/{name}/revision/{revision}")
        async def repo_info(request: Request, kind: str, namespace: str, name: str, revision: str = "main") -> dict:
            repo = self._find(request, repo_type_of(kind), f"{namespace}/{name}")
            return self._info(repo, self._commit(repo, revision))

        @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}")
        @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}/{path:path}")
        async def tree(
            request: Request, kind: str, namespace: str, name: str, revision: str, path: str = "", recursive: str = ""
        ) -> list[dict]:
            repo = self._find(request, repo_type_of(kind), f"{namespace}/{name}")
            return _tree(self._commit(repo, revision), path.strip("/"), recursive.lower() in ("1", "true"))

        @app.post("/api/{kind}/{namespace}/{name}/paths-info/{revision}")
        async def paths_info(request: Request, kind: str, namespace: str, name: str, revision: str) -> list[dict]:
            commit = self._commit(self._find(request, repo_type_of(kind), f"{namespace}/{name}"), revision)
            entries = []
            for path in parse_qs((await request.body()).decode()).get("paths", []):
                path = path.strip("/")
                if path in commit.files:
                    entries.append(_file_entry(path, commit.files[path]))
                elif any(name.startswith(f"{path}/") for name in commit.files):
                    entries.append(_folder_entry(commit, path))
            return entries

        @app.post("/api/{kind}/{namespace}/{name}/preupload/{revision}")
        async def preupload(request: Request, kind: str, namespace: str, name: str, revision: str) -> dict:
            repo = self._find(request, repo_type_of(kind), f"{namespace}/{name}", write=True)
            current = self._commit(repo, revision, branch_only=True).files
            return {
                "files": [
                    {
                        "path": file["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_sha1(current[file["path"]]) if file["path"] in current else None,
                    }
                    for file in (await request.json())["files"]
                ]
            }

        @app.post("/api/{kind}/{namespace}/{name}/commit/{revision}")
        async def commit(request: Request, kind: str, namespace: str, name: str, revision: str) -> dict:
            repo = self._find(request, repo_type_of(kind), f"{namespace}/{name}", write=True)
            if request.query_params.get("create_pr"):
                raise HubError(400, "The test Hub does not open pull requests")
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            new = self._apply_commit(repo, revision, lines)
            return {"commitUrl": f"{self._url(repo)}/commit/{new.sha}", "commitOid": new.sha, "pullRequestUrl": None}

        def resolver(repo_type: str):
            async def resolve(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
                return self._download(request, repo_type, f"{namespace}/{name}", revision, path)

            return resolve

        for repo_type, prefix in _URL_PREFIXES.items():
            route = f"/{prefix}{{namespace}}/{{name}}/resolve/{{revision}}/{{path:path}}"
            app.add_api_route(route, resolver(repo_type), methods=["GET", "HEAD"])
        return app


def point_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, cache_dir: str | Path, token: str) -> None:
    """Point `huggingface_hub` and `transformers`, already imported, at `endpoint` for the rest of a test.

    Both read their settings once, at import: the endpoint (and the download URL template built from it), offline
    mode (`HF_HUB_OFFLINE`, which also blocks loopback), the cache folder and Xet; `huggingface_hub` keeps a module
    level `HfApi` (behind `huggingface_hub.create_repo`, ...) and transformers a shared one, both created with the
    endpoint of their time. This patches each of them (undone by `monkeypatch`), downloads into the empty
    `cache_dir` (never a stale cache), and sets the environment to match for any subprocess.
    """
    from huggingface_hub import constants, hf_api
    from transformers.utils import hub as transformers_hub

    cache_dir = str(cache_dir)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("HF_ENDPOINT", endpoint), ("HF_HUB_CACHE", cache_dir), ("HF_TOKEN", token)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # `is_offline_mode()` reads it
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache_dir)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # rebuilt on first use, with the endpoint above


def skip_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client's retries immediate for the rest of a test.

    `huggingface_hub` retries a download, and the preupload step of a commit, 5 times after a connection error,
    sleeping 1, 2, 4, 8 and 8 s: about 23 s per file before a down Hub is reported. The attempts still happen.
    """
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))  # its only use of `time`


@contextmanager
def silent_port_url() -> Iterator[str]:
    """The URL of a loopback port that accepts connections and never answers, for as long as the block runs.

    The socket listens and is never read: the kernel completes the handshake and queues the connection, so a client
    connects, sends its request and waits for an answer that never comes.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def closed_port_url() -> Iterator[str]:
    """The URL of a loopback port that refuses connections (bound, never listening), for as long as the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
