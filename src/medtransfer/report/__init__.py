"""The report: statistics (paired tests, bootstrap CIs, gap closed, win counts), tables, plots, HTML/Markdown."""

from __future__ import annotations

from .build import ReportFiles, ReportOptions, build_report, create_report, write_report

__all__ = ["ReportFiles", "ReportOptions", "build_report", "create_report", "write_report"]
