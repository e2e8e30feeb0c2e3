"""Figures, the HTML report page and optuna-dashboard's figure and note; they read studies and never train."""

__all__ = ["figures", "live", "report_page"]
