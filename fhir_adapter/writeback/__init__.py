"""Write screening results back to a FHIR server: ResearchStudy, ResearchSubject, Provenance."""
