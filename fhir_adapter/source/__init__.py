"""Read FHIR inputs: files, Bundles, bulk NDJSON; group resources by patient."""
