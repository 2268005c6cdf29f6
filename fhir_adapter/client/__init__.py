"""The FHIR REST client: transport, authentication, retries, limits, URL checks."""
