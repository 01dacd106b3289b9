// The catalog of proxy-made replies and the Retry-After rounding every 429/503 relies on.
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody, proxyError, retryAfterSeconds } from '../../src/errors.js';

describe('retryAfterSeconds', () => {
  const rows = [
    { desc: 'zero is 1, never 0', ms: 0, want: '1' },
    { desc: 'negative is 1', ms: -500, want: '1' },
    { desc: 'a sliver is 1', ms: 0.001, want: '1' },
    { desc: 'exactly one second', ms: 1000, want: '1' },
    { desc: 'float noise above a whole second stays that second', ms: 1000.0000000000001, want: '1' },
    { desc: 'a millisecond over rounds up', ms: 1001, want: '2' },
    { desc: 'twelve seconds', ms: 12_000, want: '12' },
    { desc: 'fractional seconds round up', ms: 8571.43, want: '9' },
  ];
  it.each(rows)('$desc', ({ ms, want }) => {
    expect(retryAfterSeconds(ms)).toBe(want);
  });
});

describe('catalog', () => {
  const spec: [string, number][] = [
    ['circuit_open', 503],
    ['rate_limited', 429],
    ['upstream_timeout', 504],
    ['upstream_unavailable', 502],
    ['bulkhead_full', 503],
    ['no_route', 404],
    ['payload_too_large', 413],
    ['bad_request', 400],
    ['upstream_rate_limited', 429],
    ['idempotency_in_flight', 409],
    ['idempotency_mismatch', 422],
    ['stub_missing', 501],
    ['idempotency_unavailable', 503],
    ['credentials_missing', 401],
    ['method_not_allowed', 405],
    ['request_timeout', 408],
    ['headers_too_large', 431],
    ['internal_error', 500],
  ];
  it.each(spec)('%s is %i (SPEC)', (code, status) => {
    expect(ERRORS[code as keyof typeof ERRORS].status).toBe(status);
    expect(proxyError(code as keyof typeof ERRORS).status).toBe(status);
  });

  it('the body is flat JSON with code, message, status, upstream and requestId', () => {
    const body = JSON.parse(errorBody(proxyError('circuit_open'), 'twilio', 'req-1')) as Record<string, unknown>;
    expect(body).toEqual({ code: 'circuit_open', message: ERRORS.circuit_open.message, status: 503, upstream: 'twilio', requestId: 'req-1' });
  });

  it('every catalog body is byte-for-byte the JSON of the whole object, first call and cached', () => {
    const ids = ['req-1', '5f0c6a9e-1b2c-4d3e-8f90-a1b2c3d4e5f6', 'a/b:c=d+e@f', '-', 'odd "quote" \\ \u2028'];
    for (const code of Object.keys(ERRORS) as (keyof typeof ERRORS)[]) {
      for (const upstream of [undefined, 'twilio', 'vapi', 'needs "escaping"']) {
        for (const requestId of ids) {
          const want = JSON.stringify({ code, message: ERRORS[code].message, status: ERRORS[code].status, upstream: upstream ?? null, requestId });
          expect(errorBody(proxyError(code), upstream, requestId)).toBe(want);
          expect(errorBody(proxyError(code), upstream, requestId)).toBe(want);
        }
      }
    }
  });

  it('a custom message or status is not served from the cached head', () => {
    errorBody(proxyError('bad_request'), 'twilio', 'r');
    expect(JSON.parse(errorBody(proxyError('bad_request', { message: 'Only origin-form.' }), 'twilio', 'r')).message).toBe('Only origin-form.');
    expect(JSON.parse(errorBody({ ...proxyError('bad_request'), status: 431 }, 'twilio', 'r')).status).toBe(431);
  });

  it('upstream is null before routing', () => {
    expect(JSON.parse(errorBody(proxyError('no_route'), undefined, 'r')).upstream).toBeNull();
  });
});
