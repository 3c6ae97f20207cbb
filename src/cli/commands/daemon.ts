import type { Command } from 'commander';
import { createLogger } from '../../core/log.js';
import type { DaemonConfig } from '../../daemon/config.js';
import type { startDaemon } from '../../daemon/index.js';
import { checkStore } from '../context.js';
import { collect } from './pull.js';

/** SIGTERM to exit must stay under Kubernetes' default 30 s grace, and our own 10 s promise. */
const STOP_DEADLINE_MS = 9_000;

export function register(program: Command): void {
  program
    .command('daemon')
    .description('run the node daemon: keep declared models pulled, serve the HTTP API and metrics')
    .option('--config <file>', 'daemon config, YAML or JSON (without it: the defaults, and these flags)')
    .option('--listen <host:port>', 'address of the HTTP API, e.g. 127.0.0.1:7070 or :7070 (default 127.0.0.1:7070)')
    .option('--model <ref>', 'a model to keep pulled, added to the config\'s (repeatable)', collect)
    .addHelpText('after', '\nA quick try, without a config file:\n  swift-fetch daemon --store ./store --listen 127.0.0.1:7070 --model hf://Qwen/Qwen2.5-0.5B-Instruct\n')
    .action(async (o: { config?: string; listen?: string; model?: string[] }, cmd: Command) => {
      const g = cmd.optsWithGlobals<{ store?: string; stateDir?: string; logLevel?: string }>();
      // Loaded here, not with the CLI: the other commands need none of the daemon's parts.
      const [{ applyFlags, loadConfig, parseConfig }, { startDaemon }] = await Promise.all([import('../../daemon/config.js'), import('../../daemon/index.js')]);
      const file: DaemonConfig = o.config ? await loadConfig(o.config) : parseConfig('', 'defaults', { baseDir: process.cwd() });
      // Flags given explicitly win over the file.
      const config = applyFlags(file, { store: g.store, stateDir: g.stateDir, logLevel: g.logLevel, listen: o.listen, models: o.model });
      checkStore(config.store);
      const logger = createLogger(config.logLevel);
      // Listen before starting: a SIGTERM while the daemon starts (a pod deleted at once) is a
      // clean stop once it is up, not a kill by the default handler (exit 143).
      let received: NodeJS.Signals | undefined;
      let wake: ((s: NodeJS.Signals) => void) | undefined;
      const on = (s: NodeJS.Signals) => {
        received ??= s;
        wake?.(s);
      };
      process.on('SIGTERM', on);
      process.on('SIGINT', on);
      let daemon: Awaited<ReturnType<typeof startDaemon>>;
      let signal: NodeJS.Signals;
      try {
        daemon = await startDaemon(config, { logger });
        signal = received ?? (await new Promise<NodeJS.Signals>((resolve) => (wake = resolve)));
      } finally {
        process.off('SIGTERM', on);
        process.off('SIGINT', on);
      }
      logger.info({ module: 'daemon', signal }, 'signal received');
      // A second signal during shutdown is ignored: we are already on our way out, within the deadline.
      const ignore = () => logger.warn({ module: 'daemon' }, 'already stopping');
      process.on('SIGTERM', ignore);
      process.on('SIGINT', ignore);
      let t: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => (t = setTimeout(() => {
        logger.warn({ module: 'daemon' }, 'shutdown deadline reached; exiting anyway');
        r();
      }, STOP_DEADLINE_MS)));
      await Promise.race([daemon.stop(), deadline]);
      clearTimeout(t);
      process.off('SIGTERM', ignore);
      process.off('SIGINT', ignore);
    });
}
