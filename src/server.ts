// The process: two listeners (proxy, admin), policy reload on SIGHUP, graceful drain on
// SIGTERM/SIGINT. The proxy object is swapped atomically on reload; requests in flight keep
// the pipeline they started on.
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, proxyError, type ErrorCode } from './errors.js';
import { createMetrics, sanitisedHost, type Metrics } from './metrics.js';
import { createLogger, type Log } from './log.js';
import { loadPolicyFile, PolicyError } from './policy/load.js';
import { watchPolicyFile, type PolicyWatch } from './policy/watch-file.js';
import type { Policy } from './policy/schema.js';
import { buildProxy, type Proxy } from './proxy.js';
import { SharedState, type StackDeps } from './pipeline/stack.js';
import { monotonic } from './resilience/clock.js';
import { memoryStore, type LimiterStore } from './store/store.js';
import { MemoryIdempotencyStore, type IdempotencyStore } from './store/idempotency-store.js';
import type { StoreEvents } from './store/redis.js';
import { adminHandler } from './admin.js';
import { statusRecorder } from './status/record.js';
import { VERSION } from './version.js';
import { startTracing, stopTracing } from './tracing.js';

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
  const memory = memoryStore({ maxKeys: policy.clientId.maxClients, idleMs: policy.clientId.idleTimeout * 1000, clock });
  let store: LimiterStore = memory;
  let idem: IdempotencyStore = new MemoryIdempotencyStore(policy.store.idempotencyEntries, clock, policy.store.idempotencyBytes);
  let fleetSemaphore: StackDeps['fleetSemaphore'];
  let cacheStore: StackDeps['cacheStore'];
  if (policy.store.type === 'redis') {
    // Loaded only when asked for: ioredis and its command table are about 8 MB of heap and
    // code that a single-replica sidecar never uses.
    const [{ redisStore, redisConnection }, { redisIdempotencyStore }] = await Promise.all([
      import('./store/redis.js'),
      import('./store/redis-idempotency.js'),
    ]);
    const shared = redisStore({
      connection: redisConnection(policy.store),
      replicas: policy.store.replicas,
      timeoutMs: policy.store.timeout * 1000,
      retryMs: policy.store.retryAfter * 1000,
      local: memory,
      events: redisStoreEvents(metrics, log),
    });
    store = shared;
    const { fleetSemaphore: makeSemaphore } = await import('./store/redis-semaphore.js');
    const replicas = policy.store.replicas;
    fleetSemaphore = (cap, leaseMs, maxQueue, prefix) =>
      makeSemaphore({ redis: shared.redis, cap, leaseMs, maxQueue, replicas, prefix, usable: shared.health.usable });
    // The response cache rides the same connection and health; its own wait is the limiter's short one.
    const { RedisCacheStore, VALUE_OVERHEAD_BYTES } = await import('./cache/redis-store.js');
    cacheStore = (upstream, local, maxBodyBytes) =>
      new RedisCacheStore({
        redis: shared.redis,
        health: shared.health,
        local,
        clock,
        timeoutMs: policy.store.timeout * 1000,
        maxValueBytes: maxBodyBytes + VALUE_OVERHEAD_BYTES,
        prefix: `bw:cache:${upstream}:`,
      });
    // One connection for all: idempotency claims and fleet slots ride the rate limiter's client and health.
    idem = redisIdempotencyStore({
      redis: shared.redis,
      health: shared.health,
      local: idem,
      timeoutMs: policy.store.idempotencyTimeout * 1000,
      claimMs: 60_000,
      retryMs: policy.store.retryAfter * 1000,
      onReset: () => {
        metrics.idempotencyStoreResets.inc();
        log.error(
          { store: 'redis' },
          'idempotency store came back empty (Redis restarted without persistence?): keys used before the restart may be forwarded again',
        );
      },
    });
  }
  const state = new SharedState();
  const status = statusRecorder(clock);
  const deps: StackDeps = { metrics, log, clock, store, memory, idempotency: idem, state, onSettled: status.onSettled, fleetSemaphore, cacheStore };
  let proxy = buildProxy(policy, deps);
  state.sweep();
  // OpenTelemetry: loaded only when the OTEL_* variables configure an exporter.
  await startTracing(process.env, VERSION, (msg) => log.warn(msg));

  let draining = false;
  const sockets = new Set<Socket>();
  /** Connections with a request in flight. */
  let busy = 0;

  // Per-connection bookkeeping for the drain lives on the connection itself, and the response
  // 'close' listener is one shared function. The first version kept a Map of sockets and a Set of
  // responses updated on every request, with a closure per request: V8 then kept about 2 KB of
  // every request alive past two scavenges and promoted it, 1 MB per scavenge under load, which
  // cost more CPU in GC than any stage and most of the RSS growth under load.
  function onResponseClose(this: TrackedResponse): void {
    // The response's own note of its connection: by now Node may have detached both.
    const socket = this[kSocketOf];
    const conn = socket?.[kConn];
    if (socket === undefined || conn === undefined || conn.inFlight === 0) return;
    if (conn.current === this) conn.current = undefined;
    if (--conn.inFlight === 0) {
      busy--;
      if (draining) socket.end();
    }
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as TrackedSocket;
    // A request read from a connection the drain has already half-closed can never be answered:
    // never start it, so it cannot reach an upstream (a lost answer to a forwarded POST is a
    // duplicate SMS when the app retries). The client sees the connection close unanswered, the
    // keep-alive race every HTTP/1.1 client must be ready to retry.
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const conn = (socket[kConn] ??= { inFlight: 0, current: undefined });
    if (conn.inFlight++ === 0) busy++;
    conn.current = res;
    (res as TrackedResponse)[kSocketOf] = socket;
    if (draining) res.shouldKeepAlive = false;
    res.on('close', onResponseClose);
    // The proxy object in use when the request arrived serves it to the end, even across a reload.
    proxy.handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'request handling failed');
      if (res.headersSent) return res.destroy();
      const body = errorBody(proxyError('internal_error'), undefined, '-');
      res.writeHead(500, { 'content-type': 'application/json', 'x-breakwater-error': 'internal_error', connection: 'close' });
      res.end(body);
    });
  };

  const server = http.createServer(
    {
      maxHeaderSize: policy.server.maxHeaderBytes,
      headersTimeout: policy.server.headersTimeout * 1000,
      requestTimeout: policy.server.requestTimeout * 1000,
      keepAliveTimeout: policy.server.keepAliveTimeout * 1000,
      // Node enforces headersTimeout/requestTimeout only when it sweeps its connection list,
      // every 30 s by default: a 10 s header timeout would really be up to 40 s. Sweep often
      // enough that the limits mean what they say.
      connectionsCheckingInterval: Math.min(1000, policy.server.headersTimeout * 500),
      // Node's parser already rejects conflicting Content-Length/Transfer-Encoding; keep it strict.
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
    },
    onRequest,
  );
  server.maxConnections = policy.server.maxConnections;
  // One line more than the limit is kept, so a head over it is seen and refused (431) rather than
  // cut to size: Node drops lines past its limit silently, and a late Content-Length or
  // Authorization would vanish.
  server.maxHeadersCount = policy.server.maxHeaders + 1;
  // Node answers `Expect: 100-continue` with 100 by itself before the request is seen, inviting a
  // body the proxy is about to refuse: a declared oversize gets its 413 without the 100 (the
  // request-body stage answers it), as nginx does.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const declared = Number(req.headers['content-length']);
    if (!(declared > policy.server.maxBodyBytes)) res.writeContinue();
    onRequest(req, res);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    metrics.clientConnections.inc();
    (s as TrackedSocket)[kConn] = { inFlight: 0, current: undefined };
    s.on('close', () => {
      sockets.delete(s);
      const conn = (s as TrackedSocket)[kConn];
      if (conn !== undefined && conn.inFlight > 0) busy--;
      // Zeroed, not removed: writing undefined over the field would generalise the Socket map and
      // deoptimise every compiled function in node's HTTP and stream code that has seen a socket.
      if (conn !== undefined) conn.inFlight = 0;
      metrics.clientConnections.dec();
    });
  });
  // CONNECT would make us a tunnel to anywhere: refuse it on the wire.
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    // No request reaches the pipeline, so no access line: this is its line.
    metrics.openProxyRefusals.labels('connect').inc();
    log.warn(
      { reqId: '-', method: 'CONNECT', probeHost: sanitisedHost(req.url ?? ''), status: 405, outcome: 'method_not_allowed' },
      'open-proxy attempt refused',
    );
    refuseRaw(socket, 'method_not_allowed', 'CONNECT is not supported: Breakwater is not a forward proxy.');
  });
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => refuseRaw(socket, 'bad_request', 'Protocol upgrades are not supported.'));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // The parser can fail after it handed us a request whose answer is already written (a framing
    // error found past the head, e.g. an unknown transfer coding): a second, raw answer would
    // read as the answer to a request the client never sent. Close after the first one instead.
    const current = (socket as TrackedSocket)[kConn]?.current;
    if (current !== undefined && current.headersSent) {
      lingerThenDestroy(socket);
      return;
    }
    if (err.code === 'HPE_HEADER_OVERFLOW') refuseRaw(socket, 'headers_too_large');
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') refuseRaw(socket, 'request_timeout');
    else refuseRaw(socket, 'bad_request', 'Malformed HTTP request.');
  });

  const admin = http.createServer(
    adminHandler({
      metrics,
      proxy: () => proxy,
      ready: () => !draining,
      log,
      status,
      store: store.kind,
      storeFallback: () => !((store as { health?: { usable(): boolean } }).health?.usable() ?? true),
      now: clock,
      names: policy.server.adminNames,
    }),
  );

  await listen(server, policy.server.port, policy.server.host);
  await listen(admin, policy.server.adminPort, policy.server.adminHost);
  const proxyPort = (server.address() as { port: number }).port;
  const adminPort = (admin.address() as { port: number }).port;
  log.info(
    {
      proxy: `${policy.server.host}:${proxyPort}`,
      admin: `${policy.server.adminHost}:${adminPort}`,
      upstreams: [...proxy.upstreams.keys()],
      stubMode: policy.stubMode,
      store: store.kind,
      version: VERSION,
    },
    'breakwater listening',
  );

  async function reload(): Promise<boolean> {
    let next: Policy;
    try {
      next = loadPolicyFile(opts.configPath);
    } catch (err) {
      metrics.reloads.labels('failure').inc();
      metrics.reloadSuccess.set(0);
      const problems = err instanceof PolicyError ? err.message.split('\n') : [String(err)];
      log.error({ problems }, 'policy reload refused; the previous policy keeps serving');
      status.reloaded(false, problems.join('; '));
      return false;
    }
    try {
      const built = buildProxy(next, deps);
      const unused = state.sweep();
      // Listeners, the shared store and the per-client table size are set up once, at start (as
      // nginx keeps its listen sockets): say so rather than let an edit look applied.
      const atStart = {
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
        store: Object.keys(next.store),
      } as const;
      const needRestart = Object.entries(atStart).flatMap(([section, keys]) =>
        keys.filter((k) => JSON.stringify((next as never)[section][k]) !== JSON.stringify((policy as never)[section][k])).map((k) => `${section}.${k}`),
      );
      if (needRestart.length > 0) log.warn({ keys: needRestart }, 'policy reload: these settings take effect only after a restart');
      proxy = built;
      policy = next;
      log.level = next.logging.level;
      // Pools of upstreams whose settings changed: close once their in-flight requests finish.
      for (const v of unused)
        if (v && typeof (v as { close?: unknown }).close === 'function' && 'dispatch' in (v as object))
          void (v as { close(): Promise<void> }).close().catch(() => {});
      metrics.reloads.labels('success').inc();
      metrics.reloadSuccess.set(1);
      log.info({ upstreams: [...built.upstreams.keys()] }, 'policy reloaded');
      status.reloaded(true, '');
      return true;
    } catch (err) {
      state.sweep();
      metrics.reloads.labels('failure').inc();
      metrics.reloadSuccess.set(0);
      log.error({ err: String(err) }, 'policy reload refused; the previous policy keeps serving');
      return false;
    }
  }

  let shutdownPromise: Promise<void> | undefined;
  let policyWatch: PolicyWatch | undefined;
  function shutdown(): Promise<void> {
    shutdownPromise ??= (async () => {
      draining = true;
      policyWatch?.close();
      metrics.draining.set(1);
      log.info({ inFlight: busy, drainTimeout: policy.server.drainTimeout }, 'draining: readiness is 503, no new connections');
      server.close();
      // Idle keep-alive connections carry no request: close them now. On a busy one, an answer
      // not yet started goes out with Connection: close, so its client sends nothing more on a
      // connection about to close. With HTTP pipelining only the newest response is marked, which
      // is enough: it is the last one sent on that connection.
      for (const s of sockets) {
        const conn = (s as TrackedSocket)[kConn];
        if (conn === undefined || conn.inFlight === 0) s.end();
        else if (conn.current !== undefined && !conn.current.headersSent) conn.current.shouldKeepAlive = false;
      }
      const deadline = Date.now() + policy.server.drainTimeout * 1000;
      while (busy > 0 && Date.now() < deadline) await sleep(25);
      if (busy > 0) log.warn({ inFlight: busy }, 'drain timeout: closing remaining connections');
      for (const s of sockets) s.destroy();
      await Promise.allSettled([...proxy.upstreams.values()].map((u) => u.dispatcher.close()));
      await store.close();
      await stopTracing();
      await new Promise<void>((r) => admin.close(() => r()));
      admin.closeAllConnections();
      log.info('drained; exiting');
      log.flush();
    })();
    return shutdownPromise;
  }

  if (opts.signals) {
    process.on('SIGHUP', () => void reload());
    let signals = 0;
    const onStop = (sig: string) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal: sig }, 'second signal: exiting now');
        log.flush();
        (opts.onExit ?? process.exit)(1);
        return;
      }
      void shutdown().then(() => (opts.onExit ?? process.exit)(0));
    };
    process.on('SIGTERM', () => onStop('SIGTERM'));
    process.on('SIGINT', () => onStop('SIGINT'));
    if (policy.server.watch) {
      // The directory is watched, not the file: a save-by-rename or a ConfigMap `..data` swap
      // replaces the file's inode, and a watch on the old one would never fire again.
      policyWatch = watchPolicyFile(opts.configPath, {
        changed: () => void reload(),
        missing: (reason) =>
          log.warn({ path: opts.configPath, reason }, 'policy file missing or unreadable; the running policy keeps serving until it is back'),
      });
    }
  }

  return { proxyPort, adminPort, metrics, reload, shutdown, current: () => proxy };
}

const kConn = Symbol('breakwater.connection');
/** A client connection with its drain bookkeeping: requests in flight and the newest response. */
type TrackedSocket = Socket & { [kConn]: { inFlight: number; current: ServerResponse | undefined } | undefined };
const kSocketOf = Symbol('breakwater.socketOf');
type TrackedResponse = ServerResponse & { [kSocketOf]: TrackedSocket | undefined };

/** Answers on the raw socket: used where Node has no request object (parse errors, CONNECT). */
function refuseRaw(socket: Socket, code: ErrorCode, message?: string): void {
  const err = proxyError(code, message === undefined ? {} : { message });
  const status = err.status;
  const body = errorBody(err, undefined, '-');
  lingerThenDestroy(
    socket,
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-breakwater-error: ${code}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Ends the connection (after `last`, if given) and destroys it soon, read or not. */
function lingerThenDestroy(socket: Socket, last?: string): void {
  if (last === undefined) socket.end();
  else socket.end(last);
  // Node's server sockets are half-open: end() only sends our FIN, and a client that never reads
  // (so never sees it) nor closes keeps the connection, and its maxConnections slot, for ever.
  // Linger briefly so a reading client gets the answer before a reset could eat it (nginx's
  // lingering_close), then destroy. Bytes it still sends are read and dropped meanwhile.
  socket.resume();
  const linger = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
}

/** How long a refused connection may stay open after its answer was written. */
const REFUSE_LINGER_MS = 1000;

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The Redis store's reports as metrics and log lines: the store itself imports no telemetry. */
function redisStoreEvents(metrics: Metrics, log: Log): StoreEvents {
  const fallbackGauge = metrics.storeFallback.labels('redis');
  const fallbacks = metrics.storeFallbacks.labels('redis');
  fallbackGauge.set(0);
  return {
    error: (reason) => metrics.storeErrors.labels('redis', reason).inc(),
    fallback(active, reason) {
      fallbackGauge.set(active ? 1 : 0);
      if (active) {
        fallbacks.inc();
        log.warn({ store: 'redis', reason }, 'rate-limit store unavailable: deciding on local buckets');
      } else log.info({ store: 'redis' }, 'rate-limit store back: shared buckets resumed');
    },
  };
}
