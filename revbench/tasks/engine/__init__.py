"""Engines that run benchmark cases and training runs: on this machine (``local``) or on a Ray cluster (``ray``).

- ``cases``: the settings every worker shares, the selection of cases, one worker's pytest command;
- ``plugin``: the pytest plugin a worker loads: exact case selection, pinned threads, one event per case;
- ``child``: worker processes that die with their parent;
- ``partial``: the finished cases of a run, kept atomically in the output folder, validated before a resume;
- ``runner``: ``run_cases`` (retries, resume) and ``build_document`` (the merged pytest-benchmark JSON);
- ``local``, ``ray_engine``: the two engines; ``tasks``: training runs of the reproductions through an engine;
- ``progress``: done / running / failed with an ETA.
"""
