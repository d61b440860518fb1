"""Screenshots of each gallery page type for the README, taken in real
headless Chromium against `pbe-fs serve` over the stand-in pixiv's archive.

    .venv/bin/python docs/screenshots.py      # writes docs/gallery-*.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chromium import Browser  # noqa: E402
from tests.conftest import GONE, Server, pbe, write_config  # noqa: E402
from tests.fakepixiv import FakePixiv  # noqa: E402

SHOTS = [  # file, path, (width, height), dark
    ("gallery-home.png", "/?image=square_medium&ipp=50", (1280, 800), False),
    ("gallery-artwork.png", "/by-id/93012350/?image=large", (1280, 800), False),
    ("gallery-gone.png", f"/by-id/{GONE}/", (1280, 800), False),
    ("gallery-search.png", "/_pbe/ui/search?q=filler&image=square_medium", (1280, 800), False),
    ("gallery-folders.png", "/by-artist/", (1280, 600), False),
    ("gallery-tag.png", "/by-tag/%E3%82%AA%E3%83%AA%E3%82%B8%E3%83%8A%E3%83%AB/?image=medium&ipp=20", (1280, 800), False),
    ("gallery-admin.png", "/_pbe/ui/admin", (1280, 500), False),
    ("gallery-delete.png", "/a/93013001/delete", (1280, 400), False),
    ("gallery-phone-dark.png", "/?image=square_medium", (390, 844), True),
    ("gallery-artwork-dark.png", "/by-id/93012346/", (1280, 800), True),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakePixiv() as fake:
        folder = Path(tmp)
        config = write_config(folder, fake)
        pbe(config, "sync", "--no-progress", check=True)
        fake.works[GONE].state = "deleted"
        pbe(config, "sync", "--full", "--no-progress", check=True)
        server = Server(config)
        try:
            for name, path, (width, height), dark in SHOTS:
                with Browser(folder / f"profile-{name}", width, height) as browser:
                    browser.size(width, height, mobile=width < 600)
                    browser.dark(dark)
                    browser.go(server.url + path)
                    browser.images_loaded(first=18, timeout=5)  # the lazy ones in view
                    browser.screenshot(ROOT / "docs" / name)
                print("docs/" + name)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
