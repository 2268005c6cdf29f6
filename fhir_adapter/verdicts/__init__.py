"""Evaluate criteria as data with three-valued logic."""
