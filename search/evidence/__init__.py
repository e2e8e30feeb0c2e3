"""Is the gain real? What decides it, by reading the study (nothing here trains):

- ``stats``: the statistics, pure NumPy and SciPy (paired differences, intervals, multiple testing, chance);
- ``power``: what a stage could detect, the seeds a gain needs, what chance alone shows;
- ``noise``: the study's own noise floor, and a gain stated in its units;
- ``confirm_plan``: the confirm stage's plan: its arms, seeds, and where each run stands;
- ``verdict``: the confirm stage's summary and its account in words;
- ``document``: the export document, with the evidence it carries.

The loops that train (the confirm stage's runs, the multi-seed evaluation) are ``search.confirm_loop`` and
``search.evaluation``.
"""

__all__ = ["stats", "power", "noise", "confirm_plan", "verdict", "document"]
