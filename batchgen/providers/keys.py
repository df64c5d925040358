"""API keys: checked before anything is sent, and never shown in anything batchgen prints."""

from __future__ import annotations

import functools
from urllib.parse import quote, quote_plus

from ..errors import UsageError

MIN_KEY_LENGTH = 8  # the documented keys have 36; a shorter one is a mistake (and unredactable)
_SECRETS: set[str] = set()


def check_api_key(key: str, source: str) -> str:
    """The key, if it can be sent as it is: printable ASCII, no whitespace.

    Checked before anything is sent. A stray newline or tab (a key pasted from a file) would
    otherwise make httpx refuse the header with an error that quotes the key in full. The
    message never contains the key, only where it came from and what is wrong.
    """
    if len(key) < MIN_KEY_LENGTH:
        raise UsageError(
            f"the API key from {source} is {len(key)} characters long; an API key has at least {MIN_KEY_LENGTH}"
        )
    for position, char in enumerate(key, start=1):
        if not 33 <= ord(char) <= 126:
            what = "whitespace" if char.isspace() else "a character that is not printable ASCII"
            raise UsageError(
                f"the API key from {source} has {what} at position {position} of {len(key)}; "
                "an API key is printable ASCII with no spaces or line breaks"
            )
    return key


def remember_secret(secret: str) -> None:
    """Note a key this process holds, so no error message it prints can show it."""
    if len(secret) >= MIN_KEY_LENGTH:
        _SECRETS.add(secret)


def redact_secrets(text: str) -> str:
    """`text` with every key this process has held redacted (see `redact`)."""
    for secret in _SECRETS:
        text = redact(text, secret)
    return text


def redact(text: str, secret: str) -> str:
    """`text` with `secret` replaced in every form it could appear in: as is, in a str or bytes
    repr (escapes), and URL-encoded."""
    if not secret:
        return text
    for form in _forms(secret):
        text = text.replace(form, "<api key>")
    return text


@functools.lru_cache(maxsize=16)
def _forms(secret: str) -> tuple[str, ...]:
    # Worked out once per key, not at every call's answer (a run redacts thousands).
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return tuple(form for form in sorted(forms, key=len, reverse=True) if form)
