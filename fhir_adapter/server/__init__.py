"""HTTP layer for talking to FHIR servers: client, authentication, secret references."""
