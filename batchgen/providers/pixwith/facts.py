"""What pixwith.ai documents that batchgen relies on by name, and the sandbox's fixed address:
kept apart so that the sandbox and the provider's description share them without importing
each other."""

DEFAULT_BASE_URL = "https://api.pixwith.ai"
KEY_VARIABLE = "PIXWITH_API_KEY"
BASE_URL_VARIABLE = "PIXWITH_BASE_URL"
TEST_KEY = "key_00000000000000000000000000000000"  # the documented test key; the sandbox takes it
# `run --sandbox` serves on this port, and its requests are known by this address whatever
# port serves them, so that their identities stay the same from run to run.
DEFAULT_PORT = 47878
SANDBOX_IDENTITY = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_CREDITS = 1_000_000  # a sandbox's starting balance
