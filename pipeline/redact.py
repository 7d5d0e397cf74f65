"""Credentials inside URLs are never shown: ``redact_secrets`` replaces a URL's userinfo
(``https://user:pass@host`` → ``https://***@host``) and the values of query parameters that carry
secrets (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``sig``, ``token``,
``access_token``, ``api_key``, ``password``, …) with ``***``, wherever they occur in a text.

Everything mmindex shows goes through it: every ``MmindexError`` message (``errors.py``), every
failed row's reason, every line, table cell and ``--json`` value the CLI prints
(``cli/terminal.py``), and the log lines that name a URL.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_secrets"]

REDACTED = "***"

# scheme://userinfo@ — userinfo is everything before the first '@' of the authority.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@\[\]]+)@")
# ?name=value / &name=value where the name ends with a word that names a secret.
_SECRET_PARAMETER = re.compile(
    r"(?P<lead>[?&;](?:amp;)?)(?P<name>[A-Za-z0-9_.\-]*?"
    r"(?:signature|credential|token|secret|password|passwd|pwd|key|keyid|sig|auth|authorization|session))"
    r"=(?P<value>[^&#\s'\"<>]+)",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda found: f"{found['scheme']}{REDACTED}@", text)
    return _SECRET_PARAMETER.sub(lambda found: f"{found['lead']}{found['name']}={REDACTED}", text)
