// The process: two listeners (proxy, admin), policy reload on SIGHUP, graceful drain on
// SIGTERM/SIGINT. The proxy object is swapped atomically on reload; requests in flight keep
// the pipeline they started on. Each part is its own file under process/.
import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMetrics, type Metrics } from './metrics.js';
import { createLogger, type Log } from './log.js';
import { watchPolicyFile, type PolicyWatch } from './policy/watch-file.js';
import type { Policy } from './policy/schema.js';
import { buildProxy, type Proxy } from './proxy.js';
import { SharedState, type StackDeps } from './pipeline/stack.js';
import { monotonic, sleep } from './resilience/clock.js';
import { adminHandler } from './admin.js';
import { statusRecorder } from './status/record.js';
import { VERSION } from './version.js';
import { startTracing, stopTracing } from './tracing.js';
import { openStores } from './process/stores.js';
import { clientListener } from './process/client-listener.js';
import { reloader } from './process/reload.js';

export interface Running {
  readonly proxyPort: number;
  readonly adminPort: number;
  readonly metrics: Metrics;
  reload(): Promise<boolean>;
  /** Drains and closes; resolves when everything is shut. */
  shutdown(): Promise<void>;
  current(): Proxy;
}

export interface StartOptions {
  configPath: string;
  policy: Policy;
  log?: Log;
  /** Install SIGHUP/SIGTERM/SIGINT handlers (the CLI does; tests drive methods directly). */
  signals?: boolean;
  onExit?: (code: number) => void;
}

export async function start(opts: StartOptions): Promise<Running> {
  let policy = opts.policy;
  const log = opts.log ?? createLogger(policy.logging.level);
  const metrics = createMetrics();
  metrics.buildInfo.labels(VERSION, process.version).set(1);
  const clock = monotonic;
  const stores = await openStores(policy, metrics, log, clock);
  const state = new SharedState();
  const status = statusRecorder(clock);
  const deps: StackDeps = {
    metrics,
    log,
    clock,
    store: stores.limiter,
    memory: stores.memory,
    idempotency: stores.idempotency,
    state,
    onSettled: status.onSettled,
    fleetSemaphore: stores.fleetSemaphore,
    cacheStore: stores.cacheStore,
  };
  let proxy = buildProxy(policy, deps);
  state.sweep();
  // OpenTelemetry: loaded only when the OTEL_* variables configure an exporter.
  await startTracing(process.env, VERSION, (msg) => log.warn(msg));

  // The proxy object in use when a request arrives serves it to the end, even across a reload.
  const clients = clientListener(
    () => policy.server,
    metrics,
    log,
    (req, res) => proxy.handle(req, res),
  );
  let draining = false;
  const admin = http.createServer(
    adminHandler({
      metrics,
      proxy: () => proxy,
      ready: () => !draining,
      log,
      status,
      store: stores.limiter.kind,
      storeFallback: stores.fallingBack,
      now: clock,
      names: policy.server.adminNames,
    }),
  );
  await listen(clients.server, policy.server.port, policy.server.host);
  await listen(admin, policy.server.adminPort, policy.server.adminHost);
  const proxyPort = (clients.server.address() as AddressInfo).port;
  const adminPort = (admin.address() as AddressInfo).port;
  log.info(
    {
      proxy: `${policy.server.host}:${proxyPort}`,
      admin: `${policy.server.adminHost}:${adminPort}`,
      upstreams: [...proxy.upstreams.keys()],
      stubMode: policy.stubMode,
      store: stores.limiter.kind,
      version: VERSION,
    },
    'breakwater listening',
  );

  const reload = reloader({
    configPath: opts.configPath,
    deps,
    state,
    metrics,
    log,
    status,
    current: () => ({ policy, proxy }),
    swap(nextPolicy, nextProxy) {
      policy = nextPolicy;
      proxy = nextProxy;
    },
  });

  let shutdownPromise: Promise<void> | undefined;
  let policyWatch: PolicyWatch | undefined;
  function shutdown(): Promise<void> {
    shutdownPromise ??= (async () => {
      draining = true;
      policyWatch?.close();
      metrics.draining.set(1);
      log.info({ inFlight: clients.inFlight(), drainTimeout: policy.server.drainTimeout / 1000 }, 'draining: readiness is 503, no new connections');
      clients.drain();
      const deadline = Date.now() + policy.server.drainTimeout;
      for (let i = 0; i < 1_000_000 && clients.inFlight() > 0 && Date.now() < deadline; i++) await sleep(25);
      if (clients.inFlight() > 0) log.warn({ inFlight: clients.inFlight() }, 'drain timeout: closing remaining connections');
      clients.destroyAll();
      await Promise.allSettled([...proxy.upstreams.values()].map((u) => u.dispatcher.close()));
      await stores.close();
      await stopTracing();
      await new Promise<void>((r) => admin.close(() => r()));
      admin.closeAllConnections();
      log.info('drained; exiting');
      log.flush();
    })();
    return shutdownPromise;
  }

  if (opts.signals) {
    policyWatch = onSignals(opts, policy.server.watch, log, reload, shutdown);
  }
  return { proxyPort, adminPort, metrics, reload, shutdown, current: () => proxy };
}

/** SIGHUP reloads, the first SIGTERM/SIGINT drains and a second exits at once; the file watch reloads too. */
function onSignals(opts: StartOptions, watch: boolean, log: Log, reload: () => Promise<boolean>, shutdown: () => Promise<void>): PolicyWatch | undefined {
  const exit = opts.onExit ?? process.exit;
  process.on('SIGHUP', () => void reload());
  let signals = 0;
  const onStop = (sig: string) => {
    if (++signals > 1) {
      log.warn({ signal: sig }, 'second signal: exiting now');
      log.flush();
      exit(1);
      return;
    }
    void shutdown().then(() => exit(0));
  };
  process.on('SIGTERM', () => onStop('SIGTERM'));
  process.on('SIGINT', () => onStop('SIGINT'));
  if (!watch) return undefined;
  // The directory is watched, not the file: a save-by-rename or a ConfigMap `..data` swap
  // replaces the file's inode, and a watch on the old one would never fire again.
  return watchPolicyFile(opts.configPath, {
    changed: () => void reload(),
    missing: (reason) => log.warn({ path: opts.configPath, reason }, 'policy file missing or unreadable; the running policy keeps serving until it is back'),
  });
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
