"""The sandbox: a local stand-in for the pixwith.ai task API (see server.py), its state
(state.py) and its storage host (storage.py). Imported only when a command asks for it."""

from ....errors import SandboxPortBusy
from ..facts import DEFAULT_CREDITS, DEFAULT_PORT, TEST_KEY
from .server import SandboxServer, running
from .state import Call, Sandbox, SandboxConfig, Task, parse_task_id, sample_video, sandbox_price

__all__ = [
    "DEFAULT_CREDITS",
    "DEFAULT_PORT",
    "TEST_KEY",
    "Call",
    "Sandbox",
    "SandboxConfig",
    "SandboxPortBusy",
    "SandboxServer",
    "Task",
    "parse_task_id",
    "running",
    "sample_video",
    "sandbox_price",
]
