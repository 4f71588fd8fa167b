"""Keep passwords out of logs and messages."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://user:password@host -> scheme://user:****@host; works on malformed URLs too: the
# password runs to the last @ of the URL, so one holding @ / # : shows no part of itself.
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*(?=@)")


def mask_url(url: str) -> str:
    """Return *url* with any password replaced by ****."""
    return _PASSWORD.sub(r"\g<head>****", url)


def mask_broker_url(url: str) -> str:
    """A whole broker URL with everything between the user name and the last @ masked (spaces too)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return mask_url(url)
    return f"{scheme}://{userinfo.partition(':')[0]}:****@{host}"


def url_password(url: str) -> str:
    """The password in *url* as written and as decoded, for masking; '' if none."""
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def mask_text(text: str, secrets: tuple[str, ...]) -> str:
    """Mask URLs in *text* and any literal secret that still shows."""
    text = mask_url(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text
