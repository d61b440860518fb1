"""Run the real gallery-dl against the stand-in pixiv.

gallery-dl hardcodes pixiv's hosts; this launcher rewrites every request
its session makes to those hosts so that it reaches the stand-in instead,
then runs gallery-dl's own command line unchanged::

    python -m tests.gallerydl_run http://127.0.0.1:PORT [gallery-dl arguments…]
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit

import requests

PIXIV_HOSTS = {"app-api.pixiv.net", "oauth.secure.pixiv.net", "i.pximg.net", "s.pximg.net", "www.pixiv.net"}


def point_at(base: str) -> None:
    """Send every request for a pixiv host to ``base`` (scheme and host:port)."""
    target = urlsplit(base)
    original = requests.Session.request

    def request(self: requests.Session, method: str, url: str, *args: object, **kwargs: object) -> requests.Response:
        parts = urlsplit(url)
        if parts.hostname in PIXIV_HOSTS:
            url = urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request  # type: ignore[method-assign]


def main() -> int:
    point_at(sys.argv[1])
    from gallery_dl import main as gallery_dl_main

    sys.argv = ["gallery-dl", *sys.argv[2:]]
    return int(gallery_dl_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
