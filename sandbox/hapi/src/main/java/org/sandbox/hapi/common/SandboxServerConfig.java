package org.sandbox.hapi.common;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.sql.DataSource;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.JpaConfig;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.interceptor.CascadingDeleteInterceptor;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.rest.api.SearchTotalModeEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.LoggingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * Version-independent wiring of the HAPI JPA server: storage settings, the Hibernate
 * EntityManagerFactory on the in-memory H2 DataSource (from spring.datasource.*), and the
 * RestfulServer servlet mounted at /fhir/*.
 */
@Configuration
@Import({
	HapiJpaConfig.class, // JpaConfig + paging provider, fulltext/stale-search services, resource counts
	JpaBatch2Config.class, // batch2 engine ($export, delete-expunge, reindex jobs)
	Batch2JobsConfig.class,
	SubscriptionChannelConfig.class, // in-memory channel used by batch2
	ThreadPoolFactoryConfig.class // thread pools used by the transaction processor
})
public class SandboxServerConfig {

	@Bean
	public JpaStorageSettings jpaStorageSettings(
			@Value("${server.port}") int port,
			@Value("${sandbox.local-ports:}") String extraLocalPorts,
			@Value("${sandbox.bulk-export.job-reuse:false}") boolean bulkExportJobReuse) {
		JpaStorageSettings s = new JpaStorageSettings();
		// A search run right after a write must see the write: no search-result reuse.
		s.setReuseCachedSearchResultsForMillis(null);
		// Client-assigned ids of any form (numeric too) via PUT; server-assigned ids are UUIDs.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// No-op PUTs keep the current version (this is HAPI's default; set explicitly).
		s.setSuppressUpdatesWithNoChange(true);
		// Referential integrity stays on (defaults); absolute references to other servers are
		// accepted and stored as external, and references using this server's own base URL are
		// treated as local.
		s.setAllowExternalReferences(true);
		s.getTreatBaseUrlsAsLocal().add("http://127.0.0.1:" + port + "/fhir");
		s.getTreatBaseUrlsAsLocal().add("http://localhost:" + port + "/fhir");
		// The profile proxies (sandbox/profiles/proxy.py) forward the Host header, so a client
		// of a proxy sees http://127.0.0.1:<proxy-port>/fhir as the base: local as well.
		for (String p : extraLocalPorts.split(",")) {
			if (!p.isBlank()) {
				s.getTreatBaseUrlsAsLocal().add("http://127.0.0.1:" + p.trim() + "/fhir");
				s.getTreatBaseUrlsAsLocal().add("http://localhost:" + p.trim() + "/fhir");
			}
		}
		// Bundle.total is always filled in (cheap on a small test DB).
		s.setDefaultTotalMode(SearchTotalModeEnum.ACCURATE);
		// Cleanup helpers for tests: $expunge, and conditional deletes matching many resources.
		s.setExpungeEnabled(true);
		s.setAllowMultipleDelete(true);
		// Bulk Data $export (BulkDataExportProvider, batch2 job "BULK_EXPORT"):
		// - no job reuse: two identical kick-offs are two jobs with two poll URLs (HAPI's
		//   default, true, would hand back the earlier job; the client's resume logic is
		//   tested against separate jobs);
		// - fast tracking: a gated batch2 step that produced a single work chunk triggers the
		//   next maintenance pass at once instead of waiting for the scheduled one (see
		//   Batch2MaintenanceInterval for the scheduled pass itself).
		s.setEnableBulkExportJobReuse(bulkExportJobReuse);
		s.setJobFastTrackingEnabled(true);
		return s;
	}

	/** The batch2 maintenance pass (moves $export jobs along) every second, not every minute. */
	@Bean
	public static Batch2MaintenanceInterval batch2MaintenanceInterval() {
		return new Batch2MaintenanceInterval();
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource dataSource,
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Map<String, Object> props = new HashMap<>();
		props.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.search.enabled", "false");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		props.put("hibernate.jdbc.batch_size", "20");
		props.put("hibernate.cache.use_query_cache", "false");
		props.put("hibernate.cache.use_second_level_cache", "false");
		props.put("hibernate.cache.use_structured_entries", "false");
		props.put("hibernate.cache.use_minimal_puts", "false");
		props.put(
				"hibernate.physical_naming_strategy",
				"org.hibernate.boot.model.naming.CamelCaseToUnderscoresNamingStrategy");
		props.put(
				"hibernate.implicit_naming_strategy",
				"org.springframework.boot.orm.jpa.hibernate.SpringImplicitNamingStrategy");
		emf.getJpaPropertyMap().putAll(props);
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		JpaTransactionManager tm = new JpaTransactionManager();
		tm.setEntityManagerFactory(entityManagerFactory);
		return tm;
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviderFactory,
			IJpaSystemProvider jpaSystemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			@Qualifier(JpaConfig.JPA_VALIDATION_SUPPORT_CHAIN) IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			CascadingDeleteInterceptor cascadingDeleteInterceptor,
			BulkDataExportProvider bulkDataExportProvider,
			@Value("${sandbox.bulk-export.enabled:true}") boolean bulkExportEnabled,
			@Value("${sandbox.keep-reference-versions-at}") String keepVersionsAt,
			@Value("${sandbox.fhir-version}") String fhirVersion,
			@Value("${sandbox.instance-name:main}") String instanceName,
			@Value("${sandbox.default-page-size:20}") int defaultPageSize,
			@Value("${sandbox.max-page-size:500}") int maxPageSize) {
		FhirContext ctx = systemDao.getContext();
		// HAPI's parser strips "/_history/N" from every reference it encodes, on write (what
		// is stored) and on read. Keep the version at these paths, so a Provenance citing
		// ResearchSubject/x/_history/1 (create) and .../_history/2 (update) stays distinct.
		List<String> keepAt = Arrays.stream(keepVersionsAt.split(","))
				.map(String::trim)
				.filter(x -> !x.isEmpty())
				.toList();
		ctx.getParserOptions().setDontStripVersionsFromReferencesAtPaths(keepAt);

		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(resourceProviderFactory.createProviders());
		server.registerProvider(jpaSystemProvider);
		if (bulkExportEnabled) {
			// System, Group and Patient level $export, $export-poll-status (GET polls,
			// DELETE cancels); the NDJSON files are Binary resources (GET Binary/id).
			server.registerProvider(bulkDataExportProvider);
		}

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		// "main" is the EHR stand-in; another name (e.g. "research") is a separate server with
		// its own in-memory database, named in the CapabilityStatement so a test can tell.
		capabilities.setImplementationDescription("HAPI FHIR " + fhirVersion + " test sandbox"
				+ ("main".equals(instanceName) ? "" : " '" + instanceName + "'") + " (in-memory H2)");
		server.setServerConformanceProvider(capabilities);

		// next/prev links come from search results stored in the DB (_getpages=...).
		pagingProvider.setDefaultPageSize(defaultPageSize);
		pagingProvider.setMaximumPageSize(maxPageSize);
		server.setPagingProvider(pagingProvider);

		// Links are built from the request's host, i.e. http://127.0.0.1:<port>/fhir.
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());

		// DELETE ...?_cascade=delete deletes the resources that reference the target, too.
		server.registerInterceptor(cascadingDeleteInterceptor);

		LoggingInterceptor logging = new LoggingInterceptor();
		logging.setLoggerName("fhir.access");
		logging.setMessageFormat(
				"${requestVerb} ${completeUrl} ${operationType} ${idOrResourceName} ${processingTimeMillis}ms");
		logging.setLogExceptions(true);
		server.registerInterceptor(logging);
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> hapiServletRegistration(RestfulServer restfulServer) {
		ServletRegistrationBean<RestfulServer> reg = new ServletRegistrationBean<>(restfulServer, "/fhir/*");
		reg.setName("fhirServlet");
		reg.setLoadOnStartup(1);
		return reg;
	}
}
