package org.sandbox.hapi;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;

/**
 * Entry point of the FHIR test sandbox.
 *
 * <p>The FHIR version is chosen before the Spring context is built, because one HAPI JPA
 * server serves exactly one FHIR version: {@code --fhir-version=R4|R5} on the command line,
 * or the system property / Spring property {@code sandbox.fhir-version}, or the environment
 * variable {@code SANDBOX_FHIR_VERSION}. Default: R4.
 */
@SpringBootApplication(
		exclude = {
			HibernateJpaAutoConfiguration.class, // HAPI builds its own EntityManagerFactory
			QuartzAutoConfiguration.class, // HAPI runs its own Quartz scheduler
			ThymeleafAutoConfiguration.class
		},
		scanBasePackages = "org.sandbox.hapi.common")
public class SandboxApplication {

	public static void main(String[] args) {
		String version = System.getProperty("sandbox.fhir-version", System.getenv("SANDBOX_FHIR_VERSION"));
		List<String> rest = new ArrayList<>();
		for (String arg : args) {
			if (arg.startsWith("--fhir-version=")) {
				version = arg.substring("--fhir-version=".length());
			} else if (arg.startsWith("--sandbox.fhir-version=")) {
				version = arg.substring("--sandbox.fhir-version=".length());
			} else {
				rest.add(arg);
			}
		}
		version = version == null || version.isBlank() ? "R4" : version.trim().toUpperCase(Locale.ROOT);

		Class<?> versionConfig;
		switch (version) {
			case "R4" -> versionConfig = FhirR4Config.class;
			case "R5" -> versionConfig = FhirR5Config.class;
			default -> {
				System.err.println("Unsupported FHIR version '" + version + "' (use R4 or R5)");
				System.exit(2);
				return;
			}
		}
		rest.add("--sandbox.fhir-version=" + version);

		SpringApplication app = new SpringApplication(SandboxApplication.class, versionConfig);
		app.run(rest.toArray(new String[0]));
	}
}
