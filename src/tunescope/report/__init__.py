"""The experiment report: the paper's figures and findings for the user's own model and data."""

from tunescope.report.pipeline import Report, build_report

__all__ = ["Report", "build_report"]
