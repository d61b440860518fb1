"""pbe-fs: a pixiv bookmarks archive shown as a plain folder tree."""

__version__ = "0.1.0"
