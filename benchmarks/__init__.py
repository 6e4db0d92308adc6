"""Benchmarks: each prints a table (and writes JSON with --json); run from the repository root
as ``python -m benchmarks.NAME`` (``--help`` for the options).

- ``landmarks``: our models against dlib's shape predictor, per face or end to end (``--e2e``)
- ``detector``: the face detectors on scaled and rolled faces
- ``video``: tracking on a synthetic clip: frames/s, jitter, lag
- ``pipeline``: the training input pipeline against the seed's
- ``web_api``: load check of ``app.py``
- ``measures``: head pose, eye and mouth openness against the annotated points
"""
