// The one catalog of replies Breakwater makes itself. Every proxy-made response carries
// `X-Breakwater-Error: <code>` and a flat JSON body, a shape both the Twilio and the Vapi SDKs
// surface as a readable error (`message`, `status`).

export const ERRORS = {
  bad_request: { status: 400, message: 'The request could not be accepted by the proxy.' },
  credentials_missing: {
    status: 401,
    message: 'The request carries the placeholder credential, and Breakwater holds no credentials for this upstream to put in its place.',
  },
  no_route: { status: 404, message: 'No upstream is configured for this path or host.' },
  method_not_allowed: { status: 405, message: 'This method is not forwarded by Breakwater.' },
  request_timeout: { status: 408, message: 'The request was not received in time.' },
  idempotency_in_flight: { status: 409, message: 'A request with this Idempotency-Key is still in flight.' },
  payload_too_large: { status: 413, message: 'The request body exceeds the configured limit.' },
  idempotency_mismatch: { status: 422, message: 'This Idempotency-Key was used with a different request body.' },
  headers_too_large: { status: 431, message: 'The request headers are too large or too many.' },
  rate_limited: { status: 429, message: 'Rate limit exceeded for this client.' },
  upstream_rate_limited: { status: 429, message: 'The upstream rate-limited this account; holding requests until it recovers.' },
  internal_error: { status: 500, message: 'A fault inside Breakwater; the upstream was not at fault.' },
  stub_missing: { status: 501, message: 'Stub mode is on and no stub matches this request.' },
  upstream_unavailable: { status: 502, message: 'The upstream could not be reached or closed the connection.' },
  circuit_open: { status: 503, message: 'The circuit breaker for this upstream is open.' },
  bulkhead_full: { status: 503, message: 'Too many concurrent requests to this upstream.' },
  idempotency_unavailable: {
    status: 503,
    message: 'The shared idempotency store cannot say whether this Idempotency-Key was already used, so nothing was sent. Retry with the same key.',
  },
  upstream_timeout: { status: 504, message: 'The upstream did not answer in time.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * The `code` of the error a streamed request body raises when it outgrows the limit mid-stream:
 * the body stage throws it, the forward stage maps it to `payload_too_large`.
 */
export const BODY_TOO_LARGE = 'BW_BODY_TOO_LARGE';

/** A reply the proxy makes itself. Stages return it (Envoy's "local reply") rather than throw. */
export interface ProxyError {
  readonly kind: 'error';
  readonly code: ErrorCode;
  readonly status: number;
  readonly message: string;
  /** Extra response headers (Retry-After, RateLimit…). */
  readonly headers?: Record<string, string>;
  /** Set when the upstream may have received the request (an ambiguous outcome). */
  readonly detail?: string;
}

export function proxyError(code: ErrorCode, opts: { headers?: Record<string, string>; message?: string; detail?: string } = {}): ProxyError {
  const def = ERRORS[code];
  return { kind: 'error', code, status: def.status, message: opts.message ?? def.message, headers: opts.headers, detail: opts.detail };
}

/**
 * Everything before the request id is the same for every catalog reply of one code and upstream
 * (an open breaker or a limit answers thousands a second), so that part is built once per pair.
 * The bytes equal JSON.stringify of the whole object; a custom message or status takes that path.
 */
const heads = new Map<ErrorCode, Map<string | undefined, string>>();

export function errorBody(err: ProxyError, upstream: string | undefined, requestId: string): string {
  const def = ERRORS[err.code];
  if (err.message !== def.message || err.status !== def.status)
    return JSON.stringify({ code: err.code, message: err.message, status: err.status, upstream: upstream ?? null, requestId });
  let byUpstream = heads.get(err.code);
  if (byUpstream === undefined) heads.set(err.code, (byUpstream = new Map()));
  let head = byUpstream.get(upstream);
  if (head === undefined) {
    const whole = JSON.stringify({ code: err.code, message: def.message, status: def.status, upstream: upstream ?? null, requestId: '' });
    byUpstream.set(upstream, (head = whole.slice(0, whole.length - '""}'.length)));
  }
  return head + JSON.stringify(requestId) + '}';
}

/** Seconds for Retry-After: never 0 (clients would spin), rounded up. */
export function retryAfterSeconds(ms: number): string {
  // Round to the microsecond first: token maths leaves float noise (a 1 s wait computed as
  // 1000.0000000000001 ms), which must not become a 2 s Retry-After.
  return String(Math.max(1, Math.ceil(Math.round(ms * 1000) / 1e6)));
}
