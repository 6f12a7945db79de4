"""Randomized fault-injection trials (``python -m tests.chaos``) and their checker."""
