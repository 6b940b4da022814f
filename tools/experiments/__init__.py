"""What the study, the demo and the benchmarks share; not part of the installed package.

``runtime`` holds what every experiment shares (an iteration-based runtime, train-then-test,
a seeded initial-weights file); ``shapes`` (with ``shapes_data``, the synthetic set), ``camvid``,
``cifar`` and ``kd_tutorial`` build the models and configs of the tracks of
``tools/analysis/distill_study.py`` and the demo; ``study`` runs a track, ``report`` writes its
tables and charts (matplotlib); ``allocator`` keeps freed memory for reuse (the benchmarks'
``--keep-freed-memory``). Imported as ``tools.experiments``: from the repository root (tests),
or by the tools, which put the root on ``sys.path``.
"""
