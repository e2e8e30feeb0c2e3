"""The Optuna search over shortcut schedules: space, objective, study, and the run/export/evaluate commands."""
