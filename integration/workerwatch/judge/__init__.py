"""Judging: observations and the previous run's memory in, verdicts, reasons and events out."""
