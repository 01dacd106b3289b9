// Policy reload (SIGHUP or the file watch): build the next proxy beside the running one and swap
// only if the whole build succeeded; a refused file leaves the previous policy serving.
import type { Metrics } from '../metrics.js';
import type { Log } from '../log.js';
import { loadPolicyFile, PolicyError } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import { buildProxy, type Proxy } from '../proxy.js';
import type { SharedState, StackDeps } from '../pipeline/stack.js';
import type { StatusRecorder } from '../status/record.js';

/** Settings read once at start (listeners, the shared store, the client table), as nginx keeps its listen sockets. */
const AT_START = {
  server: [
    'host',
    'port',
    'adminHost',
    'adminPort',
    'maxHeaderBytes',
    'maxHeaders',
    'headersTimeout',
    'requestTimeout',
    'keepAliveTimeout',
    'maxConnections',
    'watch',
  ],
  clientId: ['maxClients', 'idleTimeout'],
  store: null,
} as const;

export interface Reloadable {
  configPath: string;
  deps: StackDeps;
  state: SharedState;
  metrics: Metrics;
  log: Log;
  status: StatusRecorder;
  current(): { policy: Policy; proxy: Proxy };
  swap(policy: Policy, proxy: Proxy): void;
}

export function reloader(r: Reloadable): () => Promise<boolean> {
  const { metrics, log, status } = r;
  const refused = (problems: string[]) => {
    metrics.reloads.labels('failure').inc();
    metrics.reloadSuccess.set(0);
    log.error({ problems }, 'policy reload refused; the previous policy keeps serving');
    status.reloaded(false, problems.join('; '));
    return false;
  };
  return async function reload(): Promise<boolean> {
    let next: Policy;
    try {
      next = loadPolicyFile(r.configPath);
    } catch (err) {
      return refused(err instanceof PolicyError ? err.message.split('\n') : [String(err)]);
    }
    let built: Proxy;
    try {
      built = buildProxy(next, r.deps);
    } catch (err) {
      r.state.sweep();
      return refused([String(err)]);
    }
    const unused = r.state.sweep();
    const needRestart = restartOnly(r.current().policy, next);
    // Say so rather than let an edit look applied.
    if (needRestart.length > 0) log.warn({ keys: needRestart }, 'policy reload: these settings take effect only after a restart');
    r.swap(next, built);
    log.level = next.logging.level;
    // Pools of upstreams whose settings changed: close once their in-flight requests finish.
    for (const v of unused) if (isPool(v)) void v.close().catch(() => {});
    metrics.reloads.labels('success').inc();
    metrics.reloadSuccess.set(1);
    log.info({ upstreams: [...built.upstreams.keys()] }, 'policy reloaded');
    status.reloaded(true, '');
    return true;
  };
}

/** The restart-only settings that differ between two policies, as `section.key`. */
export function restartOnly(before: Policy, after: Policy): string[] {
  return Object.entries(AT_START).flatMap(([section, listed]) => {
    const a = (before as unknown as Record<string, Record<string, unknown>>)[section]!;
    const b = (after as unknown as Record<string, Record<string, unknown>>)[section]!;
    const keys = listed ?? Object.keys(b);
    return keys.filter((k) => JSON.stringify(b[k]) !== JSON.stringify(a[k])).map((k) => `${section}.${k}`);
  });
}

function isPool(v: unknown): v is { close(): Promise<void> } {
  return typeof v === 'object' && v !== null && typeof (v as { close?: unknown }).close === 'function' && 'dispatch' in v;
}
