// Entry point: read the configuration, start the roles asked for, stop
// cleanly on SIGTERM, SIGINT or SIGHUP.
import './node-env.js';
import { ConfigError, loadConfig } from './config.js';
import { StartRefused } from './errors.js';
import { startHookline } from './hookline.js';
import { createLogger, destinationOf, silence } from './logger.js';

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
  // The reader of its output gone (`npm start | head -1`, a log collector that died): the
  // service stops as on SIGTERM, recording what is in flight, with a code that says it failed
  // (a supervisor restarts it, with a reader). It neither runs on unseen (npm, whose own
  // output broke too, is gone then, and Ctrl-C no longer reaches this process) nor ends on the
  // spot, where the logger's flush on exit would retry the broken pipe for ever (sonic-boom).
  let readerGone = false;
  let stopForReader: (() => void) | undefined;
  // Any other failure to write (ENOSPC: the disk its output goes to is full; EBADF) loses the
  // log lines from then on, and the service goes on: the logger's exit flush would retry the
  // write for ever otherwise. (EAGAIN and EBUSY the logger retries itself.) EIO: the terminal
  // it wrote to was closed (the window, an SSH session), which signals SIGHUP too.
  let silenced = false;
  const outputFailed = (error: NodeJS.ErrnoException): void => {
    if (error.code === 'EAGAIN' || error.code === 'EBUSY') return;
    if (!silenced) {
      silenced = true;
      silence(log);
      if (error.code !== 'EPIPE' && error.code !== 'EIO') {
        // Said once where an operator may still see it (a stderr gone too loses only this line).
        process.stderr.on('error', () => {});
        process.stderr.write(`hookline: cannot write log lines to stdout (${error.code}): they are dropped until the service restarts\n`);
      }
    }
    if ((error.code !== 'EPIPE' && error.code !== 'EIO') || readerGone) return;
    readerGone = true;
    stopForReader?.();
  };
  process.stdout.on('error', outputFailed);
  destinationOf(log)?.on('error', outputFailed);
  // Until it has started there is nothing to finish: a signal ends the process, and the
  // embedded PostgreSQL with it (src/db/embedded.ts stops it on exit).
  const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
  const early = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'stopped during start-up');
    process.exit(1);
  };
  for (const signal of SIGNALS) process.on(signal, early);
  // Its embedded PostgreSQL gone (the error is logged where it is seen): the service stops,
  // with a code that says it failed, for a supervisor to restart it.
  let fatal: (error: Error) => void = () => process.exit(1);
  const hookline = await startHookline({ config, log, onFatal: (error) => fatal(error) });
  for (const signal of SIGNALS) process.off(signal, early);
  if (config.adminTokenGenerated && config.role !== 'worker' && !readerGone) {
    // Printed once, on stdout, for the person who started the service (a worker serves no API).
    process.stdout.write(
      `\nHookline admin token (generated; set ADMIN_TOKEN to choose one): ${config.adminToken}\n` +
        `GraphiQL: ${hookline.app.url}/graphql\n\n`,
    );
  }
  let signalled: { signal?: string; cause?: string; at: number } | undefined;
  /** Stops the roles, then exits with `code`, or 1 should the stop fail or take too long. */
  const shutdown = (why: { signal: string } | { cause: string }, code = 0) => {
    if (signalled) {
      // The same signal again at once is the first one twice: `npm start` passes a terminal's
      // Ctrl-C on to this process, which the terminal signalled too (so does a stop by
      // systemd's default KillMode, to npm and to this process).
      if ('signal' in why && why.signal === signalled.signal && performance.now() - signalled.at < SAME_SIGNAL_MS) return;
      // A shutdown begun because its output's reader is gone, unseen by whoever signals now:
      // this signal is the first one asked for, and the shutdown goes on. (One begun because
      // the embedded PostgreSQL exited can record nothing more: a signal ends it.)
      if ('signal' in why && !signalled.signal && signalled.cause === READER_GONE) {
        signalled = { ...signalled, signal: why.signal, at: performance.now() };
        log.info(why, 'shutting down already; a second signal ends it at once');
        return;
      }
      // Asked again (a second Ctrl-C): whatever is still in flight is left to its lease.
      log.warn(why, 'signalled again while shutting down; exiting now');
      process.exit(1);
    }
    signalled = 'signal' in why ? { signal: why.signal, at: performance.now() } : { cause: why.cause, at: performance.now() };
    log.info(why, 'shutting down');
    // Attempts in flight end within the delivery timeout and are recorded just after; a
    // database that no longer answers would hold the rest up for long, so it gets this much.
    const graceMs = config.deliveryTimeoutMs + SHUTDOWN_MARGIN_MS;
    setTimeout(() => {
      log.error({ graceMs }, 'shutdown took too long; exiting now (deliveries in flight are left to their leases)');
      process.exit(1);
    }, graceMs).unref();
    hookline.stop().then(
      () => process.exit(code),
      (error) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const signal of SIGNALS) process.on(signal, () => shutdown({ signal }));
  // Already stopping (the shutdown's own log line may be what finds the reader gone): it goes on as it began.
  stopForReader = () => signalled || shutdown({ cause: READER_GONE }, 1);
  if (readerGone) stopForReader();
  fatal = () => shutdown({ cause: 'the embedded PostgreSQL exited' }, 1);
}

const READER_GONE = 'the reader of its output is gone';

/** A signal repeated within this is one signal delivered twice (see shutdown). */
const SAME_SIGNAL_MS = 500;

/** The time a shutdown gets beyond the delivery timeout, to record the last attempts and stop. */
const SHUTDOWN_MARGIN_MS = 10_000;

main().catch((error) => {
  if (error instanceof ConfigError) {
    // Found only once it was used (HOOKLINE_DATA_DIR): said as a wrong value read at start-up is.
    process.stderr.write(`hookline: invalid configuration: ${error.message}\n`);
    process.exit(1);
  }
  if (error instanceof StartRefused) {
    process.stderr.write(`hookline: ${error.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`hookline: failed to start: ${(error as Error)?.stack ?? error}\n`);
  process.exit(1);
});
