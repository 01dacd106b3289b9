// The policy schema: the single typed source of truth. Types are inferred from it, defaults
// live in it, and every field carries a `describe()` line that docs/policy.md is generated
// from (scripts/policy-doc.mjs), so the reference cannot drift from the code.
// Objects are strict: an unknown key is an error, because a typo'd key that is silently
// ignored is a limit that silently does not apply.
import { isIP } from 'node:net';
import { z } from 'zod';
import { patternProblem } from '../routing/route-table.js';

/**
 * A duration. The file says seconds, as nginx and Envoy users write them; the parsed policy holds
 * milliseconds, so no call site converts (rounded to the microsecond: 1.1 s is 1100 ms, not
 * 1100.0000000000002). Defaults are given in seconds, through `prefault`, which parses them too.
 */
const toMs = (s: number) => Math.round(s * 1e6) / 1e3;
const seconds = (d: string) => z.number().positive().describe(d).transform(toMs);
const secondsOrZero = (d: string) => z.number().min(0).describe(d).transform(toMs);
const count = (d: string) => z.number().int().min(1).describe(d);

/** `METHOD /path/*` or `/path/**`: `*` is one segment, `{name}` one named segment, `**` the rest. */
const routePattern = z
  .string()
  .regex(/^(?:(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|\*) )?\/\S*$/, 'must look like "POST /2010-04-01/Accounts/*/Messages.json"')
  // Anywhere else `**` would silently mean "one segment of two or more characters".
  .refine((p) => !/\*\*(?!$)|[^/]\*\*$/.test(p), '`**` matches the rest of the path: it must be the whole last segment')
  // Adjacent globs have no literal to split them: matching them would need backtracking.
  .refine((p) => patternProblem(p) === undefined, 'two globs side by side in a segment (`{a}{b}`, `*{a}`) need a literal between them');

/** An address or a CIDR, as node's BlockList takes them: checked here so `validate` catches a typo, not `start`. */
const cidr = z.string().refine((s) => {
  const [addr = '', bits, extra] = s.split('/');
  const v = isIP(addr);
  if (v === 0 || extra !== undefined) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (v === 4 ? 32 : 128));
}, 'must be an IP address or CIDR, e.g. "10.0.0.0/8"');

/** Where a limit or hold key comes from. */
const keySource = z
  .string()
  .regex(
    /^(client|ip|account|basic-user|authorization|route|header:[A-Za-z0-9-]+|body:[A-Za-z0-9_.]+|body-prefix:[A-Za-z0-9_.]+:\d+)$/,
    'must be client | ip | account | basic-user | authorization | route | header:<name> | body:<field> | body-prefix:<field>:<digits>',
  );

export const breakerSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('false: the breaker counts and exports state but never blocks (metrics-only).'),
    threshold: count('Consecutive failures that open the breaker.').default(3),
    recoveryTimeout: seconds('Seconds open before half-open probes are let through.').prefault(30),
    halfOpenProbes: count('Probes allowed through at once while half-open; the rest are refused as open.').default(1),
    failureRatio: z.number().gt(0).max(1).nullable().default(null).describe('Open when this share of the last `window` calls failed (null: off).'),
    window: count('Calls in the sliding window for failureRatio.').default(20),
    minCalls: count('Minimum calls in the window before failureRatio is judged.').default(10),
    slowCall: seconds('Calls slower than this count as failures (null: off).').nullable().prefault(null),
    backoffMultiplier: z.number().min(1).default(1).describe('Open time grows by this factor on each re-open without a close (1: fixed).'),
    maxRecoveryTimeout: seconds('Cap on the grown open time.').prefault(300),
    failureWindow: seconds(
      "Consecutive failures count toward threshold only while within this many seconds of the newest; older ones of the streak are forgotten, so failures spread over a quiet period do not open the breaker as a burst does (null: never forgotten, as Envoy's consecutive_5xx).",
    )
      .nullable()
      .prefault(60),
    retryAfterMax: seconds(
      'Cap on the Retry-After of a circuit_open reply (the message still says the time left): SDKs sleep on Retry-After before re-sending, so a long one turns a fast 503 into a stall.',
    ).prefault(1),
    failOn: z
      .array(z.enum(['connect', 'timeout', 'reset', '5xx']))
      .default(['connect', 'timeout', 'reset', '5xx'])
      .describe('Outcomes that count as failures. 429 is back-pressure and 4xx the caller’s fault: never failures.'),
  })
  .describe('Circuit breaker for this upstream.');

export const retrySchema = z
  .strictObject({
    attempts: z.number().int().min(0).max(5).default(2).describe('Extra attempts after the first (idempotent methods; POST only when it never left).'),
    backoffBase: seconds('First back-off in seconds; doubles per attempt, full jitter.').prefault(0.05),
    backoffMax: seconds('Cap on a single back-off.').prefault(1),
    budgetRatio: z.number().min(0).max(1).default(0.2).describe('Retries allowed as a share of requests (Finagle/linkerd retry budget).'),
    minRetriesPerSecond: z.number().min(0).default(5).describe('Retries always allowed per second regardless of the ratio.'),
    on: z.array(z.number().int().min(500).max(599)).default([502, 503, 504]).describe('Upstream statuses retried for idempotent methods.'),
    unprocessed: z
      .array(z.number().int().min(400).max(599))
      .default([])
      .describe(
        'Statuses the upstream documents as "not processed" (Twilio 429 / 20429): retried for any method, POST included, with back-off inside the retry budget.',
      ),
  })
  .describe('Retries: idempotent methods on connect errors and listed statuses; never a request that may have reached the upstream.');

export const bulkheadSchema = z
  .strictObject({
    maxConcurrent: count('Concurrent in-flight requests to this upstream.').default(100),
    queue: z.number().int().min(0).default(0).describe('Requests that may wait for a slot.'),
    queueTimeout: seconds('Longest wait in the queue.').prefault(1),
    fleet: z
      .boolean()
      .default(false)
      .describe(
        'Hold maxConcurrent across every replica (per Twilio account; elsewhere per API key, as Vapi limits its org) through the Redis store, lowered by 429s and Twilio-Concurrent-Requests; needs RATE_LIMIT_STORE=redis.',
      ),
    leaseTimeout: seconds('A fleet slot held by a replica that died comes back after this.').prefault(30),
  })
  .describe('Concurrency cap for this upstream (Twilio limits concurrency per account).');

export const rateLimitSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9_-]+$/)
    .describe('Name in RateLimit headers, metrics and logs.'),
  rate: z.number().positive().describe('Tokens added per `per` seconds.'),
  per: seconds('Refill period in seconds.').prefault(60),
  burst: z.number().positive().nullable().default(null).describe('Bucket size (null: equal to rate).'),
  key: z.array(keySource).min(1).default(['client']).describe('Parts of the bucket key; a request lacking a part skips this limit.'),
  route: routePattern.nullable().default(null).describe('Only requests matching this pattern (null: all requests of the upstream).'),
  shadow: z.boolean().default(false).describe('Count and log would-be rejections without enforcing (dry run).'),
  maxDelay: secondsOrZero('Seconds a request may be held for a token instead of rejected (shaping, like nginx limit_req delay).').prefault(0),
  store: z.enum(['default', 'memory']).default('default').describe('default: the global store (memory or redis); memory: always local.'),
  headers: z
    .enum(['remaining', 'always', 'limited'])
    .default('remaining')
    .describe(
      "Which answers carry the IETF fields. The 429 this limit refuses always carries RateLimit and RateLimit-Policy; an allowed answer carries RateLimit (what remains) under remaining, both fields under always, none under limited (Envoy's local rate limit by default).",
    ),
});

export const idempotencySchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    header: z.string().default('idempotency-key').describe('Request header carrying the key (removed before forwarding).'),
    methods: z.array(z.enum(['POST', 'PUT', 'PATCH', 'DELETE'])).default(['POST']),
    ttl: seconds('Seconds a completed answer is replayed.').prefault(86400),
    waitTimeout: seconds('Seconds a duplicate waits for the in-flight original before 409.').prefault(30),
    maxBodyBytes: count('Largest response body stored for replay; larger answers are not stored.').default(65536),
  })
  .describe('Idempotency keys: a repeated create is replayed, not re-sent.');

export const holdSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    key: z.array(keySource).min(1).default(['account']).describe('What an upstream 429 holds (e.g. the Twilio account).'),
    defaultHold: seconds('Hold when the upstream sends no Retry-After.').prefault(1),
    maxHold: seconds('Cap on a hold taken from Retry-After.').prefault(60),
    jitter: z.number().min(0).max(1).default(0.1).describe('Share of random extra added to each hold.'),
    retryWithin: secondsOrZero(
      'Seconds: a 429 that the upstream documents as not processed (Twilio 20429) is sent once more, for any method, when the hold it starts ends within this time and the retry budget allows; otherwise, and at 0, the 429 is relayed.',
    ).prefault(0),
    also: z
      .array(z.strictObject({ status: z.number().int().min(400).max(499), bodyIncludes: z.string().min(1) }))
      .default([])
      .describe('Other upstream answers that are back-pressure, held and surfaced like a 429 (Vapi: 400 `{"error":"Over Concurrency Limit"}`).'),
  })
  .describe('Learn from upstream 429s: hold that key locally until the upstream’s Retry-After.');

export const stubSchema = z.strictObject({
  route: routePattern.describe('Method and path pattern; `{name}` segments become template params.'),
  status: z.number().int().min(100).max(599).default(200),
  headers: z.record(z.string(), z.string()).default({}),
  body: z.unknown().optional().describe('JSON body; strings may hold {{templates}}. Absent: an empty body (e.g. for 204).'),
  delay: secondsOrZero('Seconds to wait before answering.').prefault(0),
  errorRate: z.number().min(0).max(1).default(0).describe('Share of requests answered with `errorStatus` instead.'),
  errorStatus: z.number().int().min(400).max(599).default(503),
});

const credentialsSchema = z
  .strictObject({
    type: z.enum(['none', 'basic', 'bearer']).default('none'),
    username: z.string().default('').describe('Basic user (e.g. the Account SID or an API key SID).'),
    password: z.string().default('').describe('Basic password (auth token or API key secret). Never printed.'),
    token: z.string().default('').describe('Bearer token. Never printed.'),
    replace: z.boolean().default(false).describe('true: replace an app-sent Authorization; false: keep it.'),
  })
  .describe('Credentials injected when the app sends no Authorization.');

export const cacheRouteSchema = z.strictObject({
  route: z
    .string()
    .regex(/^[a-z0-9_.-]+$/)
    .describe('Route name (from `routes`) whose GET answers are cached; HEAD is answered from them.'),
  ttl: seconds('Seconds an answer stays fresh when the upstream sends no max-age / s-maxage (Twilio and Vapi send none).'),
  maxEntryBytes: count('Largest response body stored; larger answers pass through unstored.').default(262144),
  staleIfError: secondsOrZero(
    'Seconds past its freshness an entry may be served while the breaker is open or the upstream fails (RFC 5861 stale-if-error).',
  ).prefault(0),
  keyHeaders: z
    .array(z.string().regex(/^[A-Za-z0-9-]+$/))
    .default([])
    .describe("Request headers added to the key (besides method, URI, credential and the response's Vary)."),
  onlyQuery: z
    .record(z.string(), z.array(z.string()))
    .default({})
    .describe("Cache only when each named query parameter's comma-separated values are all in its list (e.g. Lookups `Fields`: keep fraud signals out)."),
  invalidatedBy: z
    .array(routePattern.refine((p) => !/^(?:GET|HEAD|OPTIONS) /.test(p), 'an invalidating pattern names an unsafe method (POST, PUT, PATCH, DELETE) or none'))
    .default([])
    .describe(
      'Related URIs (RFC 9111 §4.4): an unsafe request (POST, PUT, PATCH, DELETE) matching one of these patterns that is answered without error also drops every entry of this route, for every credential; e.g. `POST /assistant` for the assistant list. Its own target URI is always dropped.',
    ),
});

export const cacheSchema = z
  .strictObject({
    routes: z.array(cacheRouteSchema).prefault([]).describe('Routes cached; none by default.'),
    maxEntries: count('Entries kept in memory for this upstream (least recently used evicted).').default(10000),
    maxBytes: count('Bytes kept in memory for this upstream (least recently used evicted).').default(64 * 1024 * 1024),
    coalesce: z.boolean().default(true).describe('Identical concurrent misses wait for one upstream request (nginx proxy_cache_lock).'),
    maxWaiters: z.number().int().min(0).default(1000).describe('Requests that may wait on one in-flight miss; more go upstream themselves.'),
    waitTimeout: seconds('Seconds a waiter waits before it goes upstream itself.').prefault(5),
    store: z
      .enum(['default', 'memory', 'redis'])
      .default('default')
      .describe(
        "Where entries live. default: the global store (Redis under RATE_LIMIT_STORE=redis, else memory); memory: this replica only; redis: shared by the fleet (needs RATE_LIMIT_STORE=redis). Redis entries are bounded by the routes' maxEntryBytes and expire after their freshness plus staleIfError; while Redis is away the memory store answers.",
      ),
  })
  .describe('Response cache, private to each credential (keys carry its keyed hash). Opt-in per route.');

export const routeSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9_.-]+$/)
    .describe('Label used in metrics and logs.'),
  match: routePattern,
});

export const upstreamSchema = z
  .strictObject({
    baseUrl: z.url({ protocol: /^https?$/ }).describe('Where requests are forwarded (scheme, host, optional base path).'),
    prefix: z
      .string()
      .regex(/^\/[A-Za-z0-9._-]+$/)
      .nullable()
      .default(null)
      .describe('Path prefix routed here, stripped before forwarding.'),
    hosts: z
      .array(z.string().regex(/^(\*\.)?[a-z0-9.-]+$/))
      .default([])
      .describe('Host patterns routed to https://<host> (e.g. "*.twilio.com").'),
    hostTarget: z
      .url({ protocol: /^https?$/ })
      .nullable()
      .default(null)
      .describe('Send host-routed requests to this origin instead of https://<host>, keeping the Host header (an egress proxy, or tests).'),
    timeout: seconds('Seconds the upstream may take to send response headers (UPSTREAM_TIMEOUT).').prefault(15),
    connectTimeout: seconds('Seconds to establish a connection.').prefault(5),
    sendTimeout: seconds(
      'Seconds an answer may wait on a client that stopped reading before the client and the upstream request are dropped (nginx send_timeout).',
    ).prefault(60),
    exchangeTimeout: seconds(
      'Seconds the whole upstream exchange may take, 1xx, headers and body (Envoy route timeout); a body cut by it is logged and counted as outcome truncated.',
    ).prefault(120),
    connections: count('Connection pool size.').default(128),
    stub: z.boolean().default(false).describe('Answer from `stubs`, never contact the upstream.'),
    routes: z.array(routeSchema).default([]).describe('Named route patterns: metric labels and per-route policy.'),
    breaker: breakerSchema.prefault({}),
    retry: retrySchema.prefault({}),
    bulkhead: bulkheadSchema.prefault({}),
    rateLimits: z.array(rateLimitSchema).prefault([]),
    idempotency: idempotencySchema.prefault({ enabled: false }),
    holdOn429: holdSchema.prefault({}),
    credentials: credentialsSchema.prefault({}),
    stubs: z.array(stubSchema).prefault([]),
    cache: cacheSchema.prefault({}),
  })
  .superRefine((u, ctx) => {
    // A cached route that names no route would silently cache nothing.
    const names = new Set(u.routes.map((r) => r.name));
    u.cache.routes.forEach((c, i) => {
      if (!names.has(c.route))
        ctx.addIssue({
          code: 'custom',
          path: ['cache', 'routes', i, 'route'],
          message: `names no route of this upstream (routes: ${[...names].join(', ') || 'none'})`,
        });
    });
  });

export const policySchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().default('127.0.0.1').describe('Proxy listener address (PROXY_HOST); loopback by default, since this listener injects credentials.'),
      port: z.number().int().min(0).max(65535).default(8080).describe('Proxy listener port (PROXY_PORT).'),
      adminHost: z.string().default('127.0.0.1').describe('Admin listener address (ADMIN_HOST).'),
      adminPort: z.number().int().min(0).max(65535).default(9090).describe('Admin listener port (ADMIN_PORT).'),
      adminNames: z
        .preprocess(
          (v) =>
            typeof v === 'string'
              ? v
                  .split(',')
                  .map((n) => n.trim())
                  .filter(Boolean)
              : v,
          z.array(z.string().min(1)),
        )
        .default([])
        .describe(
          'Host names (a list, or comma-separated from ADMIN_NAMES), besides loopback, localhost and the address the admin listener was reached on, that admin requests may carry in Host; any other Host is refused (DNS rebinding).',
        ),
      maxBodyBytes: count('Largest request body; bigger is 413.').default(10 * 1024 * 1024),
      bufferBodyBytes: z
        .number()
        .int()
        .min(0)
        .default(65536)
        .describe('Bodies up to this size are buffered (enables retry, idempotency hashing, body keys); larger stream through.'),
      maxHeaderBytes: count('Largest request head; bigger is 431.').default(16384),
      maxHeaders: count('Most header lines in a request head; more is 431 (HAProxy tune.http.maxhdr). Node would otherwise drop the excess silently.').default(
        100,
      ),
      headersTimeout: seconds('Seconds a client may take to send its request head (slowloris).').prefault(10),
      requestTimeout: seconds('Seconds a client may take to send the whole request.').prefault(60),
      keepAliveTimeout: seconds('Idle client keep-alive.').prefault(5),
      maxConnections: count('Concurrent client connections.').default(4096),
      drainTimeout: seconds('Seconds in-flight requests may take to finish on SIGTERM.').prefault(25),
      trustedProxies: z.array(cidr).default([]).describe('CIDRs whose X-Forwarded-For is believed.'),
      watch: z
        .boolean()
        .default(false)
        .describe(
          'Reload when the policy file changes. Its directory is watched, so saves by rename and Kubernetes ConfigMap `..data` swaps are seen; a file briefly absent keeps the running policy (SIGHUP always reloads).',
        ),
    })
    .prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      accessLog: z.boolean().default(true),
    })
    .prefault({}),
  stubMode: z.boolean().default(false).describe('Every upstream answers from stubs (INTEGRATIONS_STUB_MODE).'),
  clientId: z
    .strictObject({
      header: z.string().default('x-client-id').describe('Header naming the client; absent: the peer IP.'),
      maxClients: count('Per-client buckets kept in memory per limit (least recently used evicted).').default(100000),
      idleTimeout: seconds('Seconds after which an idle client’s state is dropped.').prefault(600),
    })
    .prefault({}),
  store: z
    .strictObject({
      type: z.enum(['memory', 'redis']).default('memory').describe('RATE_LIMIT_STORE'),
      redisUrl: z.string().default('').describe('REDIS_URL (credentials in it are never printed).'),
      redisType: z
        .enum(['single', 'sentinel', 'cluster'])
        .default('single')
        .describe('REDIS_TYPE: sentinel reads REDIS_URL as <master>,<host:port>,...; cluster as <host:port>,...'),
      redisUsername: z.string().default('').describe('REDIS_USERNAME (an ACL user).'),
      redisPassword: z.string().default('').describe('REDIS_PASSWORD (or REDIS_PASSWORD_FILE); never printed.'),
      redisTls: z.boolean().default(false).describe('REDIS_TLS: TLS to every Redis node (implied by rediss://).'),
      redisCaFile: z.string().default('').describe('REDIS_CA_FILE: PEM CA bundle for the Redis certificates.'),
      replicas: count('Replicas sharing the limits: while Redis is lost each enforces limit / replicas.').default(1),
      timeout: seconds('Longest wait for Redis before falling back to the local store.').prefault(0.05),
      retryAfter: seconds('Seconds between attempts to return to Redis after a failure.').prefault(1),
      idempotencyEntries: count('Stored idempotent answers kept in local memory (oldest evicted).').default(10000),
      idempotencyTimeout: seconds(
        'Longest wait for Redis on an idempotency lookup or claim; past it the key is unknown and the request gets 503 idempotency_unavailable (nothing is sent).',
      ).prefault(1.5),
      idempotencyBytes: count('Bytes of stored idempotent answers kept in local memory (oldest evicted); a fleet keeps its records in Redis as well.').default(
        32 * 1024 * 1024,
      ),
    })
    .prefault({}),
  upstreams: z.record(z.string().regex(/^[a-z0-9_-]+$/, 'upstream names are lower-case words'), upstreamSchema),
});

export type Policy = z.infer<typeof policySchema>;
export type UpstreamPolicy = z.infer<typeof upstreamSchema>;
export type BreakerPolicy = z.infer<typeof breakerSchema>;
export type RetryPolicy = z.infer<typeof retrySchema>;
export type BulkheadPolicy = z.infer<typeof bulkheadSchema>;
export type RateLimitPolicy = z.infer<typeof rateLimitSchema>;
export type IdempotencyPolicy = z.infer<typeof idempotencySchema>;
export type HoldPolicy = z.infer<typeof holdSchema>;
export type StubPolicy = z.infer<typeof stubSchema>;
export type CachePolicy = z.infer<typeof cacheSchema>;
export type CacheRoutePolicy = z.infer<typeof cacheRouteSchema>;
