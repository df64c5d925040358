"""`batchgen-studio`: a provider that is not batchgen's, as a distribution of its own would ship
it (the tests lay it out in a site-packages folder with its .dist-info and entry point).

Nothing in it is pixwith's: its wire body is `{"engine", "text", "frames", "size"}`, its two
models and their rules are its own catalogue and JSON Schema, and
its sandbox is a loopback HTTP server (create, get, balance, and the result files), so that
`run --sandbox --wait --download`, `poll` and `download` go through batchgen's own HTTP
downloads as with any provider.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jsonschema

from batchgen.jobs import schemas
from batchgen.providers.base import (
    Balance,
    Description,
    Fields,
    Finding,
    Kind,
    Outcome,
    Served,
    TaskState,
    Uploaded,
)

CLIP = b"\x00\x00\x00\x18ftypmp42" + b"studio-clip" * 100  # what every task makes


class Model:
    def __init__(self, id: str, name: str, display: str, sizes: list[str]):
        self.id, self.name, self.display, self.sizes = id, name, display, sizes
        self.verified, self.why_unverified = True, None


MODELS = [
    Model("eng-fast", "studio-fast", "Studio Fast", ["small"]),
    Model("eng-best", "studio-best", "Studio Best", ["small", "large"]),
]

# Its request schema: its own words, its own rules.
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["engine", "text", "frames"],
    "additionalProperties": False,
    "properties": {
        "engine": {"enum": [m.id for m in MODELS]},
        "text": {"type": "string", "minLength": 1, "maxLength": 500},
        "frames": {"type": "integer", "minimum": 8, "maximum": 240},
        "size": {"enum": ["small", "large"]},
    },
    "allOf": [
        {
            "if": {"properties": {"engine": {"const": "eng-fast"}}},
            "then": {"properties": {"size": {"const": "small"}}},
        }
    ],
}
FIELD_OF = {
    "engine": ("model",),
    "text": ("prompt",),
    "frames": ("options", "frames"),
    "size": ("options", "size"),
}


class Catalogue:
    def models(self):
        return MODELS

    def lookup(self, name_or_id):
        return next((m for m in MODELS if name_or_id in (m.id, m.name)), None)

    def body(self, fields: Fields) -> dict[str, Any]:
        found = self.lookup(fields.model) if isinstance(fields.model, str) else None
        body: dict[str, Any] = {
            "engine": found.id if found else fields.model,
            "text": fields.prompt,
        }
        options = fields.options if isinstance(fields.options, dict) else {}
        body.update({k: v for k, v in options.items() if v is not None})
        return {k: v for k, v in body.items() if v is not None}

    def fields(self, body):
        options = {k: body[k] for k in ("frames", "size") if k in body}
        return Fields(body.get("text"), body.get("engine"), (), options)

    def check(self, body, shape=None):
        out = []
        for error in jsonschema.Draft202012Validator(SCHEMA).iter_errors(body):
            path = tuple(error.path)
            if error.validator == "required":
                missing = schemas.missing_property(error) or ""
                out.append(
                    Finding(FIELD_OF.get(missing, (missing,)), f"missing {missing}", kind="missing")
                )
                continue
            if error.validator == "additionalProperties":
                key = schemas.unexpected_keys(error)[0]
                out.append(Finding(("options", key), f"unknown field '{key}'"))
                continue
            field = FIELD_OF.get(path[0], path) if path else ()
            out.append(Finding(field, schemas.describe(error)[0]))
        return out

    def option_type(self, name):
        return {"frames": "integer", "size": "string"}.get(name)

    def price_class(self, body):
        return (body.get("engine"), body.get("size", "small"))

    def class_document(self, cls):
        return {"engine": cls[0], "size": cls[1]}

    def describe_class(self, document):
        return f"{document['engine']} {document['size']}"

    def priced(self, path):
        return path in (("model",), ("options", "size"))

    def request_schema(self):
        return SCHEMA

    def report(self, *, as_json, rules=False):
        return [json.dumps({"name": m.name, "id": m.id}) if as_json else m.name for m in MODELS]


CATALOGUE = Catalogue()


class Fake:
    """The studio's API, in memory: a task is done when first asked after (its ETA is 0)."""

    def __init__(self):
        self.tasks: dict[str, dict[str, Any]] = {}
        self.tokens = 500
        self.lock = threading.Lock()

    def create(self, body):
        with self.lock:
            task = f"st-{len(self.tasks) + 1}"
            self.tasks[task] = {"body": body}
            self.tokens -= 5
            return task


def handler_for(fake: Fake):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _json(self, status, data):
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if CATALOGUE.check(body):
                return self._json(422, {"error": "invalid"})
            task = fake.create(body)
            # A task's status is under its engine's path: its id alone does not find it.
            self._json(200, {"task": task, "status_url": f"/queue/{body['engine']}/status/{task}"})

        def do_GET(self):
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/balance":
                return self._json(200, {"tokens": fake.tokens})
            if self.path.startswith("/queue/"):
                _, _, engine, _, name = self.path.split("/")
                task = fake.tasks.get(name)
                if task is not None and task["body"]["engine"] != engine:
                    task = None
                if task is None:
                    return self._json(404, {})
                return self._json(200, {"state": "done", "video": f"{host}/files/{name}.mp4"})
            if self.path.startswith("/files/"):
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(CLIP)))
                self.end_headers()
                self.wfile.write(CLIP)
                return
            self._json(404, {})

    return Handler


class Client:
    """The studio's API over HTTP."""

    def __init__(self, base_url, key, **options):
        self.http = httpx.Client(base_url=base_url, headers={"X-Studio-Key": key}, timeout=5)

    def create(self, body):
        try:
            answer = self.http.post("/tasks", json=body)
        except httpx.HTTPError as e:
            return Outcome(Kind.IN_DOUBT, str(e))
        if answer.status_code == 422:
            return Outcome(Kind.REJECTED, "invalid", http_status=422)
        data = answer.json()
        return Outcome(
            Kind.OK,
            task_id=data["task"],
            estimated_time=0.0,
            http_status=200,
            handle=data["status_url"],
        )

    def get(self, task_id, handle=None):
        if handle is None:  # the id alone finds nothing here
            return Outcome(Kind.OK, task=TaskState("failed", error="no status URL recorded"))
        try:
            data = self.http.get(handle).json()
        except httpx.HTTPError as e:
            return Outcome(Kind.RETRY, str(e))
        if data["state"] == "done":
            return Outcome(Kind.OK, task=TaskState("completed", (data["video"],)))
        return Outcome(Kind.OK, task=TaskState("processing"))

    def balance(self):
        return Balance(self.http.get("/balance").json()["tokens"])

    def upload(self, image, data):
        return Uploaded(Kind.RETRY, reason="the studio takes no images")

    def close(self):
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def sandbox(time_scale):
    fake = Fake()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        SERVED.append(fake)
        yield Served(base, "studio-test-key", f"{base}/files/")
    finally:
        server.shutdown()
        server.server_close()


SERVED: list[Fake] = []  # each sandbox's fake, for the tests to look into

PROVIDER = Description(
    name="studio",
    default_base_url="https://api.studio.invalid",
    key_variable="STUDIO_KEY",
    connect=Client,
    catalogue=lambda: CATALOGUE,
    images_shown=lambda body: iter(()),
    with_images=lambda body, urls: body,
    sandbox=sandbox,
    sandbox_identity="http://127.0.0.1:47990",
    sandbox_credits=500,
)
