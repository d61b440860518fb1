"""Generated files: meta.json, computed zips, PDF skeletons, ugoira animations.

Nothing here knows about folders or protocols; the tree asks for contents
and gets objects with an exact ``size`` and random-access ``read``.
"""
