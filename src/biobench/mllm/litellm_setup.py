"""litellm, imported on first use and set up for biobench: no network look-ups, no telemetry, no retries of its own."""

from __future__ import annotations

import logging
import os

_litellm = None


def litellm():
    """litellm, imported on first use with its network look-ups, telemetry and chatter off."""
    global _litellm
    if _litellm is None:
        # Without this, importing litellm fetches a model price map from the internet.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            # litellm logs failed requests with the server's message, which may echo a key.
            logging.getLogger(name).setLevel(logging.CRITICAL)
        import litellm as module

        module.telemetry = False
        module.suppress_debug_info = True
        module.set_verbose = False
        module.callbacks = []
        module.success_callback = []
        module.failure_callback = []
        module.num_retries = 0  # our retry loop, not litellm's, decides (and counts)
        _litellm = module
    return _litellm
