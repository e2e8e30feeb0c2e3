"""The Optuna search over shortcut schedules, below the commands: the study's records (``records``), what decides
whether a gain is real (``evidence``), and the search itself: space, sampler and pruner, the study, one trial, the
search loop, the confirm stage's runs, worker processes, and the session a command or the notebook API opens."""

__all__ = ["records", "evidence", "config", "space", "samplers", "pruning", "study", "liveness", "run_folders",
           "run_queue", "objective", "keep", "loop", "confirm_loop", "evaluation", "workers", "slurm_script",
           "session", "progress", "interrupts"]
