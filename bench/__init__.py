"""Benchmarks of jobtrail, each measured against a baseline taken in the same run."""
