"""The stand-in pixiv server used by the tests and benchmarks."""

from .data import Work, default_works, render
from .server import FakePixiv

__all__ = ["FakePixiv", "Work", "default_works", "render"]
