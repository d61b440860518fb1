"""The repository stands alone: README and docs link only to what it holds."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_links_stay_inside_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert {p.name for p in pages} >= {"README.md", "design.md", "pixiv-api.md"}
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), (page.name, target)
    # the sections the README's own links point at exist
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", readme):
        assert anchor in anchors, anchor


def test_readme_says_what_sighup_really_reloads() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("SIGHUP"))
    for promise in ("refresh token", "`sync.*`", "at once", "needs a restart", "`mount.path`", "`webdav.port`"):
        assert promise in paragraph, promise
    assert "SIGHUP reloads the sync interval, NSFW policy and WebDAV credentials" not in readme
