import { describe, expect, it } from 'vitest';
import { cacheKey, credentialId, normaliseUri, varyNames } from '../../../src/cache/key.js';

describe('cache keys', () => {
  it('sorts query pairs by name, keeps repeated names in order, unifies encodings', () => {
    expect(normaliseUri('/v2/PhoneNumbers/+15551234567', '?Fields=caller_name&CountryCode=US')).toBe(
      '/v2/PhoneNumbers/+15551234567?CountryCode=US&Fields=caller_name',
    );
    expect(normaliseUri('/a', '?x=2&b=1&x=1')).toBe('/a?b=1&x=2&x=1');
    expect(normaliseUri('/a', '?q=a%20b')).toBe(normaliseUri('/a', '?q=a+b'));
    expect(normaliseUri('/a', '')).toBe('/a');
    expect(normaliseUri('/a', '?')).toBe('/a');
  });

  it('hashes the credential with a key, never keeps it, and tells credentials apart', () => {
    const a = credentialId('k1', 'Bearer secret-a');
    const b = credentialId('k1', 'Bearer secret-b');
    expect(a).not.toBe(b);
    expect(a).not.toContain('secret');
    expect(credentialId('k2', 'Bearer secret-a')).not.toBe(a); // keyed: another key, another id
    expect(credentialId('k1', undefined)).toBe('-');
    const k = cacheKey('vapi', '/assistant/1', a, [], {});
    expect(k).not.toContain('secret-a');
    expect(k).not.toBe(cacheKey('vapi', '/assistant/1', b, [], {}));
  });

  it('adds the policy-named request headers, absent differing from empty', () => {
    const base = cacheKey('twilio', '/x', 'c', ['accept-language'], {});
    expect(cacheKey('twilio', '/x', 'c', ['accept-language'], { 'accept-language': '' })).not.toBe(base);
    expect(cacheKey('twilio', '/x', 'c', ['accept-language'], { 'accept-language': 'fr' })).not.toBe(
      cacheKey('twilio', '/x', 'c', ['accept-language'], { 'accept-language': 'en' }),
    );
    expect(cacheKey('twilio', '/x', 'c', [], { 'accept-language': 'fr' })).toBe(cacheKey('twilio', '/x', 'c', [], {}));
  });

  it('reads Vary names', () => {
    expect(varyNames('Accept-Encoding, Accept-Language')).toEqual(['accept-encoding', 'accept-language']);
    expect(varyNames(undefined)).toEqual([]);
  });
});
