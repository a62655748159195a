"""The quality gate: steps that keep or drop rows, each drop with its reason.

In the order a run applies them (``pipeline/run/plan.py``): ``language``, ``repetition``,
``copycheck``, ``dedup``, ``cosine``, ``margin`` (and ``require_negatives``), ``judge``.
``base.Filter`` is the keep/drop loop the per-row filters share.
"""
