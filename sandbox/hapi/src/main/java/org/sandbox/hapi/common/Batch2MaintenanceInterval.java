package org.sandbox.hapi.common;

import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.context.EnvironmentAware;
import org.springframework.core.env.Environment;

/**
 * Runs HAPI's batch2 maintenance pass every {@code sandbox.batch2.maintenance-interval-millis}
 * (default 1000) instead of every 60 s (HAPI 8.8.0's {@code JobMaintenanceServiceImpl}
 * default). The maintenance pass is what moves a gated batch2 job (Bulk Data $export) from
 * one step to the next and marks it complete, so with the default a small export takes about
 * a minute or more; with 1 s it takes a few seconds.
 *
 * <p>{@code JobMaintenanceServiceImpl#setScheduledJobFrequencyMillis} must be called before
 * the scheduler asks the service for its jobs ({@code IHasScheduledJobs#scheduleJobs}, at
 * context start), hence a bean post-processor. A maintenance pass on an idle in-memory DB is
 * one small query.
 */
public class Batch2MaintenanceInterval implements BeanPostProcessor, EnvironmentAware {
	private static final Logger ourLog = LoggerFactory.getLogger(Batch2MaintenanceInterval.class);

	private long myIntervalMillis = 1000;

	@Override
	public void setEnvironment(Environment theEnvironment) {
		myIntervalMillis =
				theEnvironment.getProperty("sandbox.batch2.maintenance-interval-millis", Long.class, 1000L);
	}

	@Override
	public Object postProcessAfterInitialization(Object theBean, String theBeanName) {
		if (theBean instanceof JobMaintenanceServiceImpl svc) {
			svc.setScheduledJobFrequencyMillis(myIntervalMillis);
			ourLog.info("batch2 maintenance pass every {} ms", myIntervalMillis);
		}
		return theBean;
	}
}
