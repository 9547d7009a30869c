// Entry point: read the configuration, start the roles asked for, stop
// cleanly on SIGTERM, SIGINT or SIGHUP.
import './node-env.js';
import { ConfigError, loadConfig } from './config.js';
import { startHookline } from './hookline.js';
import { createLogger } from './logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`hookline: invalid configuration: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const log = createLogger(config.logLevel);
  // Until it has started there is nothing to finish: a signal ends the process, and the
  // embedded PostgreSQL with it (src/db/embedded.ts stops it on exit).
  const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
  const early = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'stopped during start-up');
    process.exit(1);
  };
  for (const signal of SIGNALS) process.on(signal, early);
  const hookline = await startHookline({ config, log });
  for (const signal of SIGNALS) process.off(signal, early);
  if (config.adminTokenGenerated) {
    // Printed once, on stdout, for the person who started the service.
    process.stdout.write(
      `\nHookline admin token (generated; set ADMIN_TOKEN to choose one): ${config.adminToken}\n` +
        `GraphiQL: ${hookline.app.url}/graphql\n\n`,
    );
  }
  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    log.info({ signal }, 'shutting down');
    hookline.stop().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const signal of SIGNALS) process.on(signal, () => shutdown(signal));
}

main().catch((error) => {
  process.stderr.write(`hookline: failed to start: ${(error as Error)?.stack ?? error}\n`);
  process.exit(1);
});
