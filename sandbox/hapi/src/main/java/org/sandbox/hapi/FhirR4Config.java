package org.sandbox.hapi;

import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;

/** FHIR R4: FhirContext, DAOs, resource providers and the R4 system provider. */
@Configuration
@Import(JpaR4Config.class)
public class FhirR4Config {}
