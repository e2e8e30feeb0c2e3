"""Figures, the HTML report and optuna-dashboard integration; they read studies and never train."""
