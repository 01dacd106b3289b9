// `breakwater start|validate [--config FILE]`, `breakwater status [--admin URL] [--watch]`. Exit codes (SPEC): 0 ok, 1 runtime failure,
// 2 bad usage or bad policy.
import { Command, CommanderError } from 'commander';
import { fileURLToPath } from 'node:url';
import { loadPolicyFile, PolicyError } from './policy/load.js';
import { renderPolicy } from './policy/render.js';
import { VERSION } from './version.js';

const DEFAULT_CONFIG = fileURLToPath(new URL('../config/policy.yaml', import.meta.url));

export async function main(argv: string[]): Promise<number | undefined> {
  let code: number | undefined;
  const program = new Command()
    .name('breakwater')
    .description('Resilience sidecar for the Twilio and Vapi APIs: circuit breakers, rate limits, correlation IDs, safe retries, metrics.')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError();

  program
    .command('start')
    .description('Start the proxy (PROXY_PORT, default 8080) and the admin listener (ADMIN_PORT, default 9090).')
    .option('-c, --config <file>', 'policy file', DEFAULT_CONFIG)
    .action(async (o: { config: string }) => {
      const policy = loadOrReport(o.config);
      if (!policy) {
        code = 2;
        return;
      }
      const { start } = await import('./server.js');
      try {
        await start({ configPath: o.config, policy, signals: true });
      } catch (err) {
        console.error(`breakwater: cannot start: ${(err as Error).message}`);
        code = 1;
      }
    });

  program
    .command('validate')
    .description('Check a policy and print the effective settings after environment overrides.')
    .option('-c, --config <file>', 'policy file', DEFAULT_CONFIG)
    .action((o: { config: string }) => {
      const policy = loadOrReport(o.config);
      if (!policy) {
        code = 2;
        return;
      }
      process.stdout.write(renderPolicy(policy, o.config));
      code = 0;
    });

  program
    .command('status')
    .description("Print the breakers, last-minute traffic and recent proxy-made errors from a running Breakwater's admin listener.")
    .option('--admin <url>', 'admin listener URL', process.env.BREAKWATER_ADMIN_URL ?? `http://127.0.0.1:${process.env.ADMIN_PORT ?? '9090'}`)
    .option('-w, --watch', 'redraw every second until interrupted')
    .action(async (o: { admin: string; watch?: boolean }) => {
      const { statusCommand } = await import('./status/cli.js');
      code = await statusCommand(o.admin, Boolean(o.watch));
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; anything else is bad usage.
      return err.exitCode === 0 ? 0 : 2;
    }
    throw err;
  }
  return code;
}

function loadOrReport(file: string) {
  try {
    return loadPolicyFile(file);
  } catch (err) {
    if (err instanceof PolicyError) {
      console.error(`breakwater: invalid policy (${err.problems.length} problem${err.problems.length === 1 ? '' : 's'}):\n${err.message}`);
      return undefined;
    }
    throw err;
  }
}
