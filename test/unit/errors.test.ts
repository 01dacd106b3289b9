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
    ['circuit_open', 503], ['rate_limited', 429], ['upstream_timeout', 504], ['upstream_unavailable', 502],
    ['bulkhead_full', 503], ['no_route', 404], ['payload_too_large', 413], ['bad_request', 400],
    ['upstream_rate_limited', 429], ['idempotency_in_flight', 409], ['idempotency_mismatch', 422], ['stub_missing', 501],
  ];
  it.each(spec)('%s is %i (SPEC)', (code, status) => {
    expect(ERRORS[code as keyof typeof ERRORS].status).toBe(status);
    expect(proxyError(code as keyof typeof ERRORS).status).toBe(status);
  });

  it('the body is flat JSON with code, message, status, upstream and requestId', () => {
    const body = JSON.parse(errorBody(proxyError('circuit_open'), 'twilio', 'req-1')) as Record<string, unknown>;
    expect(body).toEqual({ code: 'circuit_open', message: ERRORS.circuit_open.message, status: 503, upstream: 'twilio', requestId: 'req-1' });
  });

  it('upstream is null before routing', () => {
    expect(JSON.parse(errorBody(proxyError('no_route'), undefined, 'r')).upstream).toBeNull();
  });
});
