"""A loopback Hugging Face Hub that stores what it is sent and records every request: a test instrument.

Enough of the Hub's API for `HfApi.create_repo` and `HfApi.upload_folder` (regular and LFS files,
deletions) with `HF_ENDPOINT=<stub.url>` and `HF_HUB_DISABLE_XET=1` (machine-probe.md §7 and its
Appendix C). Committed files land under `root/<type>s/<namespace>/<name>/`. Every request is kept in
`stub.requests` (method, path, query, headers, JSON body when there is one), so a test can check the
Authorization header, the `private` flag of the create request, and which files arrived.

`stub.fail_with_echo = True` makes the commit answer 401 with the request's Authorization header
echoed in the error message, as a careless server might: what the client then shows must not
contain the token. (A failed create is no test: `create_repo(exist_ok=True)` then asks whether the
repo exists, and goes on.)
"""

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.servers.threaded import Running, serve_in_thread

SHA = "0" * 40


@dataclass
class HubRequest:
    method: str
    path: str
    query: str
    headers: dict
    body: dict | list | None


class HubStub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[HubRequest] = []
        self.private: dict[str, bool] = {}  # "datasets/ns/name" -> private flag at creation
        self.fail_with_echo = False
        self.port = 0
        self._running: Running | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repo_dir(self, kind: str, namespace: str, name: str) -> Path:
        path = self.root / kind / namespace / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def files(self, repo_id: str, kind: str = "datasets") -> dict[str, bytes]:
        """Every file stored in a repo: path in the repo -> bytes."""
        base = self.root / kind / repo_id
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    def _record(self, request: Request, body) -> None:
        self.requests.append(HubRequest(request.method, request.url.path, request.url.query, dict(request.headers), body))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/repos/create")
        async def create(request: Request):
            body = await request.json()
            self._record(request, body)
            kind = (body.get("type") or "model") + "s"
            namespace, name = body.get("organization") or "user", body["name"]
            if "/" in name:
                namespace, name = name.split("/", 1)
            self.repo_dir(kind, namespace, name)
            # huggingface_hub 2.x sends `"visibility": "private"`; older clients sent `"private": true`.
            self.private[f"{kind}/{namespace}/{name}"] = body.get("visibility") == "private" or bool(body.get("private"))
            return {"url": f"{self.url}/{kind}/{namespace}/{name}", "name": f"{namespace}/{name}"}

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request):
            self._record(request, await request.json())
            return {"errors": [], "warnings": []}

        @app.get("/api/whoami-v2")
        async def whoami(request: Request):
            self._record(request, None)
            return {"name": "user", "type": "user", "orgs": [], "auth": {"accessToken": {"role": "write"}}}

        @app.get("/api/{kind}/{namespace}/{name}")
        @app.get("/api/{kind}/{namespace}/{name}/revision/{revision:path}")
        async def info(kind: str, namespace: str, name: str, request: Request, revision: str = "main"):
            self._record(request, None)
            base = self.repo_dir(kind, namespace, name)
            siblings = [{"rfilename": p.relative_to(base).as_posix()} for p in sorted(base.rglob("*")) if p.is_file()]
            return {"id": f"{namespace}/{name}", "_id": "x", "sha": SHA, "siblings": siblings,
                    "private": self.private.get(f"{kind}/{namespace}/{name}", False), "lastModified": "2026-01-01T00:00:00.000Z",
                    "tags": [], "cardData": {}, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "author": namespace}

        @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}/{path:path}")
        @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}")
        async def tree(kind: str, namespace: str, name: str, revision: str, request: Request, path: str = ""):
            self._record(request, None)
            repo = self.repo_dir(kind, namespace, name)
            base = repo / path
            if not base.is_dir():
                return JSONResponse({"error": "Entry not found"}, status_code=404,
                                    headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
            recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
            entries = sorted(base.rglob("*") if recursive else base.iterdir())
            return [{"type": "directory", "oid": SHA, "size": 0, "path": p.relative_to(repo).as_posix()} if p.is_dir()
                    else {"type": "file", "oid": SHA, "size": p.stat().st_size, "path": p.relative_to(repo).as_posix()}
                    for p in entries]

        @app.post("/api/{kind}/{namespace}/{name}/paths-info/{revision}")
        async def paths_info(kind: str, namespace: str, name: str, revision: str, request: Request):
            self._record(request, None)
            return []

        @app.post("/api/{kind}/{namespace}/{name}/preupload/{revision}")
        async def preupload(kind: str, namespace: str, name: str, revision: str, request: Request):
            body = await request.json()
            self._record(request, body)
            return {"files": [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
                               "shouldIgnore": False} for f in body["files"]], "commitOid": SHA}

        @app.post("/api/{kind}/{namespace}/{name}/commit/{revision}")
        async def commit(kind: str, namespace: str, name: str, revision: str, request: Request):
            lines = [json.loads(line) for line in (await request.body()).decode().splitlines() if line.strip()]
            self._record(request, [{"key": o["key"], "path": o["value"].get("path")} for o in lines])
            if self.fail_with_echo:
                echoed = request.headers.get("authorization", "")
                return JSONResponse({"error": f"Invalid credentials in Authorization header: {echoed}"}, status_code=401)
            repo = self.repo_dir(kind, namespace, name)
            for operation in lines:
                key, value = operation["key"], operation["value"]
                target = repo / value.get("path", "")
                if key == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.root / "_lfs" / value["oid"], target)
                elif key == "deletedFile":
                    target.unlink(missing_ok=True)
            return {"success": True, "commitOid": hashlib.sha1(os.urandom(8)).hexdigest(),
                    "commitUrl": f"{self.url}/{kind}/{namespace}/{name}/commit/x"}

        @app.post("/{kind}/{namespace}/{name}.git/info/lfs/objects/batch")
        async def lfs_batch(kind: str, namespace: str, name: str, request: Request):
            body = await request.json()
            self._record(request, body)
            objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                        "actions": {"upload": {"href": f"{self.url}/_lfs/{o['oid']}"}}} for o in body["objects"]]
            return JSONResponse({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")

        @app.put("/_lfs/{oid}")
        async def lfs_put(oid: str, request: Request):
            data = await request.body()
            self._record(request, {"oid": oid, "size": len(data)})
            (self.root / "_lfs").mkdir(parents=True, exist_ok=True)
            (self.root / "_lfs" / oid).write_bytes(data)
            return Response(status_code=200)

        @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
        async def anything_else(rest: str, request: Request):
            self._record(request, None)
            return JSONResponse({"error": f"the hub stub has no route {request.method} /{rest}"}, status_code=404)

        return app

    def start(self) -> "HubStub":
        self._running = serve_in_thread(self.app(), name="hub-stub", port=0)
        self.port = self._running.port
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def __enter__(self) -> "HubStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
