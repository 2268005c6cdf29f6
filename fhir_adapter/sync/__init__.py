"""Scheduled, incremental, unattended sync runs against a FHIR server."""
