"""Fast failure on a machine that cannot reach the Hugging Face Hub.

Without ``HF_HUB_OFFLINE``, huggingface_hub retries every request five times with back-off: a Hub model id on an
offline compute node takes about a minute and 40 warning lines before the one-line error. So, once per process and
only when a Hub id (not a local path) is about to be used and the user has not set ``HF_HUB_OFFLINE`` either way,
:func:`offline_if_unreachable` sends one HEAD request to the Hub endpoint (``HF_ENDPOINT``, or
https://huggingface.co; through the proxy of the environment, if any) with a short timeout. If nothing answers,
it switches the process to offline mode: models and datasets already in the local cache still load, uncached ones
fail at once with the scripts' usual one-line error.

How the libraries read the flag (huggingface_hub 1.x, datasets 4-5, transformers 5, peft), checked in their source:
``huggingface_hub.constants.HF_HUB_OFFLINE`` and ``datasets.config.HF_HUB_OFFLINE`` are computed from the
environment **at import**, then read from those module attributes at call time (transformers asks
``huggingface_hub.is_offline_mode()``, which returns the constant; peft reads the environment at call time). So the
switch sets the environment variables (for libraries imported later and for child processes) and, when the
libraries are already imported, those two attributes.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable

from mathsft.paths import looks_like_local_path

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # a reachable Hub answers a HEAD request in well under a second, even from far away
# Either one, set to any value, is the user's decision: no probe.
USER_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_ids(names: Iterable[str | None]) -> list[str]:
    """The names that are Hub ids (``owner/name``), not local paths."""
    return [name for name in names if name and not looks_like_local_path(name)]


def hub_endpoint() -> str:
    """The Hub's base URL, as huggingface_hub takes it."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url`` answers a HEAD request within ``timeout`` seconds (any HTTP status counts, and so does a TLS
    error: something is there, and the libraries may know better). Only a failure to connect at all (no name,
    refused, no route, no answer) is unreachable. Proxies from the environment apply, as in the Hub libraries. Name
    resolution has no timeout of its own, so the attempt runs in a daemon thread, abandoned when time is up."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            if response is not None:  # some handlers (and test doubles) answer None
                response.close()
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the server answered
        except urllib.error.URLError as err:
            result.append(isinstance(err.reason, ssl.SSLError) or not isinstance(err.reason, OSError))
        except ssl.SSLError:
            result.append(True)
        except (OSError, ValueError):  # a timeout after connecting, a malformed endpoint
            result.append(False)

    thread = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def go_offline() -> None:
    """Offline mode for this process and its children, whether or not the Hub libraries are imported yet.

    An ``HF_DATASETS_OFFLINE`` the user set is left alone (datasets gives it precedence, and so do we)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    datasets_follow_hub = "HF_DATASETS_OFFLINE" not in os.environ
    if datasets_follow_hub:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None and datasets_follow_hub:
        datasets_config.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
        datasets_config.HF_DATASETS_OFFLINE = True  # type: ignore[attr-defined]


def offline_if_unreachable(names: Iterable[str | None], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Switch to offline mode when one of ``names`` is a Hub id and the Hub cannot be reached; True if it switched.

    Nothing happens when the user set ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), to any value, or when every
    name is a local path.
    """
    if any(variable in os.environ for variable in USER_SWITCHES):
        return False
    ids = hub_ids(names)
    if not ids:
        return False
    endpoint = hub_endpoint()
    if reachable(endpoint, timeout):
        return False
    go_offline()
    logger.info(  # the log, not stderr: an uncached model fails with the scripts' one error line anyway
        "the Hugging Face Hub (%s) is unreachable: offline mode (HF_HUB_OFFLINE=1), so %s must be in the local cache",
        endpoint, ", ".join(ids),
    )  # fmt: skip
    return True
