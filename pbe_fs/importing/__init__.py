"""`pbe-fs import`: bring an existing collection into the archive.

``oldapp`` and ``gallerydl`` read a source's layout into ``found`` works;
``engine`` checks, numbers and commits them through the sync's commit path;
``mark`` tells the next sync to walk every bookmark.
"""
