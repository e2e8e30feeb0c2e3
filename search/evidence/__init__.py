"""Is the gain real? Everything that answers it, in one place.

- ``stats``: the statistics, pure NumPy and SciPy (paired differences, intervals, multiple testing, chance);
- ``noise``: the study's own noise floor, and a gain stated in its units;
- ``confirm_stage``: the confirm stage that re-trains the search's top schedules on fresh seeds;
- ``verdict``: the confirm stage's summary and its account in words;
- ``multiseed``: the multi-seed test-set evaluation of ``search.evaluate``;
- ``document``: the export document, with the evidence it carries.
"""
