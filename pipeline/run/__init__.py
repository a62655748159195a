"""A run on disk and the decisions about it.

- ``plan``: the run plan, every decision made once (models, judge, prompts, step recipe, task split);
- ``folder``: the run folder, every path of a run and each task's checkpoint;
- ``shards``: rows to Parquet shards (kept and rejected);
- ``stats``: the funnel, counted per task and merged;
- ``manifest``: what a finished run is made of;
- ``finished``: the check that a folder holds a complete run, before it is handed over.
"""
