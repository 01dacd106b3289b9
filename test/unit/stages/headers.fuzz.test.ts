// Property tests over request-header parsing (issue 8): X-Request-Id validation, client IP
// resolution from X-Forwarded-For, and the trusted-proxy list built from the policy.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { policySchema } from '../../../src/policy/schema.js';
import { resolveClientIp, trustedProxies } from '../../../src/stages/client-identity.js';
import { isValidRequestId, requestId } from '../../../src/stages/correlation.js';

const RUNS = 1000;

const ipv4 = fc.ipV4();
const ipv6 = fc.ipV6();
const anyIp = fc.oneof(
  ipv4,
  ipv6,
  ipv4.map((a) => `::ffff:${a}`),
);
/** XFF hop text: real addresses, near-misses and garbage. */
const hop = fc.oneof(
  anyIp,
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('', ' ', 'unknown', '1.2.3.4:80', '[::1]', '::ffff:', '999.1.1.1', '1.2.3'),
);
const xff = fc.array(hop, { maxLength: 8 }).map((hs) => hs.join(','));
const trusted = trustedProxies(['10.0.0.0/8', '127.0.0.1', 'fd00::/8', '::ffff:192.168.0.0/112']);

describe('X-Request-Id fuzz', () => {
  it('never accepts a value containing CR, LF, space, tab, NUL or any non-ASCII character', () => {
    const bad = fc.constantFrom('\r', '\n', ' ', '\t', '\u0000', '\u007f', '\u0085', '\u2028', 'é', '🙂');
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), bad, fc.string({ maxLength: 60 }), (a, b, c) => {
        expect(isValidRequestId(`${a}${b}${c}`)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('anything accepted is 1–128 printable ASCII characters, and is kept as is', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 140 }), (v) => {
        if (!isValidRequestId(v)) return;
        expect(v.length).toBeGreaterThanOrEqual(1);
        expect(v.length).toBeLessThanOrEqual(128);
        expect(v).toMatch(/^[\x21-\x7e]+$/);
        expect(requestId(v)).toBe(v);
      }),
      { numRuns: RUNS },
    );
  });

  it('whatever comes in, the id that goes out is header-safe', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.array(fc.string(), { maxLength: 3 }), fc.constant(undefined)), (v) => {
        expect(requestId(v)).toMatch(/^[\x21-\x7e]{1,128}$/);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('client IP fuzz', () => {
  it('resolveClientIp never throws on arbitrary peers and X-Forwarded-For values', () => {
    fc.assert(
      fc.property(
        fc.oneof(anyIp, fc.string({ unit: 'binary', maxLength: 40 })),
        fc.option(fc.oneof(xff, fc.string({ unit: 'binary', maxLength: 200 })), { nil: undefined }),
        (peer, x) => {
          expect(typeof resolveClientIp(peer, x, trusted)).toBe('string');
          expect(typeof resolveClientIp(peer, x, undefined)).toBe('string');
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('an untrusted peer is always its own identity, whatever XFF says', () => {
    fc.assert(
      // Untrusted by the list above: not 10/8, not 127.0.0.1, and not 192.168/16, which the
      // IPv4-mapped entry covers (BlockList matches an IPv4 address against ::ffff: rules too).
      fc.property(
        fc.ipV4().filter((a) => !a.startsWith('10.') && a !== '127.0.0.1' && !a.startsWith('192.168.')),
        xff,
        (peer, x) => {
          expect(resolveClientIp(peer, x, trusted)).toBe(peer);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('a trusted peer resolves to the peer or to an address that appears in XFF', () => {
    fc.assert(
      fc.property(fc.constantFrom('10.0.0.1', '127.0.0.1', 'fd00::1', '::ffff:10.1.2.3'), xff, (peer, x) => {
        const ip = resolveClientIp(peer, x, trusted);
        const candidates = [peer, ...x.split(',').map((h) => h.trim())].flatMap((h) => [h, h.replace(/^::ffff:/, '')]);
        expect(candidates).toContain(ip);
      }),
      { numRuns: RUNS },
    );
  });

  it('every trustedProxies entry the policy schema accepts can be built (validate and start agree)', () => {
    const entry = fc.oneof(
      anyIp,
      fc.tuple(anyIp, fc.integer({ min: -1, max: 140 })).map(([a, b]) => `${a}/${b}`),
      fc.string({ maxLength: 20 }),
      fc.constantFrom('10.0.0', '10.0.0.0/', '/8', '10.0.0.0/8/8', '10.0.0.0/08', '10.0.0.0/ 8', '::/0', '0.0.0.0/0'),
    );
    let accepted = 0;
    fc.assert(
      fc.property(entry, (cidr) => {
        const ok = policySchema.shape.server.safeParse({ trustedProxies: [cidr] }).success;
        if (!ok) return;
        accepted++;
        expect(() => trustedProxies([cidr])).not.toThrow();
      }),
      { numRuns: RUNS },
    );
    // Not vacuous: plenty of valid entries were generated and built.
    expect(accepted).toBeGreaterThan(RUNS / 10);
  });
});
