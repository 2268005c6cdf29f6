"""Derive facts (values with evidence) from one patient record."""
