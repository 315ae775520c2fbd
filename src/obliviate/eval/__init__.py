"""Evaluation suites: each composes judges and metrics over named splits and writes ``eval/<suite>.json``."""
