// Client identity: X-Forwarded-For is believed only from trusted proxies, and only back to the
// rightmost address that is not itself trusted.
import { describe, expect, it } from 'vitest';
import { clientIdentity, resolveClientIp, trustedProxies } from '../../../src/stages/client-identity.js';
import { fakeExchange, SENT_200 } from '../support/exchange.js';

describe('resolveClientIp', () => {
  const trusted = trustedProxies(['10.0.0.0/8', '192.168.1.1', 'fd00::/8']);
  const rows: { desc: string; peer: string; xff: string | undefined; list?: 'none'; want: string }[] = [
    { desc: 'no XFF: the peer', peer: '203.0.113.7', xff: undefined, want: '203.0.113.7' },
    { desc: 'spoofed XFF from an untrusted peer is ignored', peer: '203.0.113.7', xff: '1.2.3.4', want: '203.0.113.7' },
    { desc: 'no trusted proxies configured: XFF ignored', peer: '10.0.0.1', xff: '1.2.3.4', list: 'none', want: '10.0.0.1' },
    { desc: 'trusted peer: the XFF client', peer: '10.0.0.1', xff: '1.2.3.4', want: '1.2.3.4' },
    { desc: 'trusted peer: rightmost untrusted hop wins over a spoofed leftmost', peer: '10.0.0.1', xff: '6.6.6.6, 1.2.3.4', want: '1.2.3.4' },
    { desc: 'trusted hops are skipped', peer: '10.0.0.1', xff: '1.2.3.4, 10.9.9.9, 10.8.8.8', want: '1.2.3.4' },
    { desc: 'a single trusted address (not a CIDR)', peer: '192.168.1.1', xff: '1.2.3.4', want: '1.2.3.4' },
    { desc: 'a neighbour of the single trusted address is not trusted', peer: '192.168.1.2', xff: '1.2.3.4', want: '192.168.1.2' },
    { desc: 'all hops trusted: the leftmost', peer: '10.0.0.1', xff: '10.1.1.1, 10.2.2.2', want: '10.1.1.1' },
    { desc: 'IPv4-mapped IPv6 peer is matched as IPv4', peer: '::ffff:10.0.0.1', xff: '1.2.3.4', want: '1.2.3.4' },
    { desc: 'IPv4-mapped IPv6 peer is reported as IPv4', peer: '::ffff:203.0.113.9', xff: undefined, want: '203.0.113.9' },
    { desc: 'IPv4-mapped hop in XFF is normalised', peer: '10.0.0.1', xff: '::ffff:1.2.3.4', want: '1.2.3.4' },
    { desc: 'IPv6 trusted proxy, IPv6 client', peer: 'fd00::1', xff: '2001:db8::5', want: '2001:db8::5' },
    { desc: 'garbage rightmost hop: stop at the peer', peer: '10.0.0.1', xff: '1.2.3.4, not-an-ip', want: '10.0.0.1' },
    { desc: 'garbage leftmost hop behind a real one: the real one', peer: '10.0.0.1', xff: 'junk, 1.2.3.4', want: '1.2.3.4' },
    { desc: 'a port in the hop is not an address', peer: '10.0.0.1', xff: '1.2.3.4:5678', want: '10.0.0.1' },
    { desc: 'empty XFF', peer: '10.0.0.1', xff: '', want: '10.0.0.1' },
    { desc: 'whitespace is trimmed', peer: '10.0.0.1', xff: '   1.2.3.4   ', want: '1.2.3.4' },
  ];
  it.each(rows)('$desc', ({ peer, xff, list, want }) => {
    expect(resolveClientIp(peer, xff, list === 'none' ? undefined : trusted)).toBe(want);
  });

  it('an empty trusted list is no list', () => {
    expect(trustedProxies([])).toBeUndefined();
  });
});

describe('clientIdentity stage', () => {
  const stage = clientIdentity('X-Client-Id', trustedProxies(['10.0.0.0/8']));
  const rows: { desc: string; headers: Record<string, string | string[]>; peer: string; key: string; ip: string }[] = [
    { desc: 'X-Client-Id names the client', headers: { 'x-client-id': 'billing-svc' }, peer: '10.0.0.1', key: 'billing-svc', ip: '10.0.0.1' },
    { desc: 'no header: the peer IP', headers: {}, peer: '203.0.113.1', key: '203.0.113.1', ip: '203.0.113.1' },
    { desc: 'no header: the trusted XFF client', headers: { 'x-forwarded-for': '1.2.3.4' }, peer: '10.0.0.1', key: '1.2.3.4', ip: '1.2.3.4' },
    { desc: 'repeated XFF headers are joined', headers: { 'x-forwarded-for': ['6.6.6.6', '1.2.3.4'] }, peer: '10.0.0.1', key: '1.2.3.4', ip: '1.2.3.4' },
    { desc: 'a client id with spaces is ignored', headers: { 'x-client-id': 'a b' }, peer: '203.0.113.1', key: '203.0.113.1', ip: '203.0.113.1' },
    { desc: 'an over-long client id is ignored', headers: { 'x-client-id': 'c'.repeat(129) }, peer: '203.0.113.1', key: '203.0.113.1', ip: '203.0.113.1' },
    {
      desc: 'an id spelled as an IPv4 address is kept apart from that peer address',
      headers: { 'x-client-id': '203.0.113.9' },
      peer: '203.0.113.1',
      key: 'id:203.0.113.9',
      ip: '203.0.113.1',
    },
    {
      desc: 'an id spelled as an IPv6 address is kept apart too',
      headers: { 'x-client-id': '2001:db8::1' },
      peer: '203.0.113.1',
      key: 'id:2001:db8::1',
      ip: '203.0.113.1',
    },
    {
      desc: 'an id spelled as a mapped address is kept apart too',
      headers: { 'x-client-id': '::ffff:203.0.113.9' },
      peer: '203.0.113.1',
      key: 'id:::ffff:203.0.113.9',
      ip: '203.0.113.1',
    },
    { desc: 'a repeated client id is ignored', headers: { 'x-client-id': ['a', 'b'] }, peer: '203.0.113.1', key: '203.0.113.1', ip: '203.0.113.1' },
  ];
  it.each(rows)('$desc', async ({ headers, peer, key, ip }) => {
    const ex = fakeExchange({ headers, remoteAddress: peer });
    const reply = await stage(ex, async () => SENT_200);
    expect(reply).toBe(SENT_200);
    expect(ex.clientKey).toBe(key);
    expect(ex.clientIp).toBe(ip);
  });
});
