package org.sandbox.hapi;

import ca.uhn.fhir.jpa.config.r5.JpaR5Config;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;

/** FHIR R5: FhirContext, DAOs, resource providers and the R5 system provider. */
@Configuration
@Import(JpaR5Config.class)
public class FhirR5Config {}
