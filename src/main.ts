// Entry point: read the configuration, start the roles asked for, stop
// cleanly on SIGTERM/SIGINT.
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
  const hookline = await startHookline({ config, log });
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
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => shutdown(signal));
}

main().catch((error) => {
  process.stderr.write(`hookline: failed to start: ${(error as Error)?.stack ?? error}\n`);
  process.exit(1);
});
