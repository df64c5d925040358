"""API keys kept for the user, as llm keeps its keys: one JSON file in the user's config folder
(`BATCHGEN_USER_DIR`, else the platform's, e.g. ~/.config/batchgen/keys.json), readable by the
user alone (0600), written whole or not at all. A key is read from it only when neither the
command line (--api-key-file) nor the provider's key variable gives one, and it
is never printed: `keys list` shows names only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from ..errors import UsageError

_FILE = "keys.json"


def user_dir() -> Path:
    """batchgen's folder in the user's config folder (BATCHGEN_USER_DIR overrides it)."""
    given = os.environ.get("BATCHGEN_USER_DIR")
    return Path(given) if given else Path(click.get_app_dir("batchgen"))


def keys_path() -> Path:
    return user_dir() / _FILE


def stored() -> dict[str, str]:
    """name → key, as stored (empty when nothing is)."""
    path = keys_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UsageError(f"{path}: cannot read the stored keys ({e.strerror})") from None
    try:
        found = json.loads(text)
    except ValueError:
        raise UsageError(f"{path}: not a keys file batchgen wrote (not JSON)") from None
    if not isinstance(found, dict):
        raise UsageError(f"{path}: not a keys file batchgen wrote (not a JSON object)")
    return {str(k): v for k, v in found.items() if isinstance(v, str)}


def key_for(name: str) -> str | None:
    return stored().get(name)


def store(name: str, key: str | None) -> Path:
    """Keep `key` under `name` (None: forget it). The file is replaced whole, 0600 from the
    moment it exists: never a moment where another user could read it, nor a torn file."""
    keys = stored()
    if key is None:
        keys.pop(name, None)
    else:
        keys[name] = key
    folder = user_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".keys-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp makes it 0600
            json.dump(keys, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, keys_path())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return keys_path()
