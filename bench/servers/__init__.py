"""Baseline receivers the benchmark compares permit-push against."""
