// Rate-limit and hold keys compiled from the policy's key lists, and phone masking for logs.
import { describe, expect, it } from 'vitest';
import { bodyField, isPhoneKey, keyFn, maskKey, maskPhone, repeatedKeyField } from '../../../src/pipeline/keys.js';
import { fakeExchange, type FakeExchangeInit } from '../support/exchange.js';

const basic = (user: string, pass = 'secret') => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const form = (body: string): FakeExchangeInit => ({ body: Buffer.from(body), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
const json = (body: unknown): FakeExchangeInit => ({ body: Buffer.from(JSON.stringify(body)), headers: { 'content-type': 'application/json; charset=utf-8' } });

describe('keyFn', () => {
  const rows: { desc: string; spec: string[]; ex: FakeExchangeInit; want: string | undefined }[] = [
    { desc: 'client', spec: ['client'], ex: { clientKey: 'app-1' }, want: 'app-1' },
    { desc: 'ip', spec: ['ip'], ex: { clientIp: '10.1.2.3' }, want: '10.1.2.3' },
    { desc: 'route', spec: ['route'], ex: { route: 'messages.create' }, want: 'messages.create' },
    {
      desc: 'account from the path',
      spec: ['account'],
      ex: { upstreamPath: '/2010-04-01/Accounts/AC0123456789abcdef/Messages.json' },
      want: 'AC0123456789abcdef',
    },
    { desc: 'account from the path, with a query', spec: ['account'], ex: { upstreamPath: '/2010-04-01/Accounts/AC1/Calls.json?PageSize=5' }, want: 'AC1' },
    { desc: 'account from the path, account resource itself', spec: ['account'], ex: { upstreamPath: '/2010-04-01/Accounts/AC1.json' }, want: 'AC1' },
    {
      desc: 'account falls back to the Basic user',
      spec: ['account'],
      ex: { upstreamPath: '/v2/Services', authorization: basic('ACfallback') },
      want: 'ACfallback',
    },
    {
      desc: 'account: path wins over Basic user',
      spec: ['account'],
      ex: { upstreamPath: '/2010-04-01/Accounts/ACpath/Messages.json', authorization: basic('ACauth') },
      want: 'ACpath',
    },
    { desc: 'account: neither → no key', spec: ['account'], ex: { upstreamPath: '/v1/x' }, want: undefined },
    { desc: 'basic-user', spec: ['basic-user'], ex: { authorization: basic('SKkey', 'p:with:colons') }, want: 'SKkey' },
    { desc: 'basic-user with a Bearer token → no key', spec: ['basic-user'], ex: { authorization: 'Bearer abc' }, want: undefined },
    {
      desc: 'basic-user without a colon → no key',
      spec: ['basic-user'],
      ex: { authorization: `Basic ${Buffer.from('nocolon').toString('base64')}` },
      want: undefined,
    },
    { desc: 'basic-user with an empty user → no key', spec: ['basic-user'], ex: { authorization: basic('') }, want: undefined },
    { desc: 'header (name case-insensitive)', spec: ['header:X-Tenant'], ex: { headers: { 'x-tenant': 'acme' } }, want: 'acme' },
    { desc: 'header absent → no key', spec: ['header:X-Tenant'], ex: {}, want: undefined },
    { desc: 'header repeated → no key', spec: ['header:X-Tenant'], ex: { headers: { 'x-tenant': ['a', 'b'] } }, want: undefined },
    { desc: 'body field from a form', spec: ['body:To'], ex: form('To=%2B15558675310&From=%2B15550001111&Body=hi'), want: '+15558675310' },
    { desc: 'body field from JSON', spec: ['body:assistantId'], ex: json({ assistantId: 'as_1' }), want: 'as_1' },
    { desc: 'body JSON dot path', spec: ['body:customer.number'], ex: json({ customer: { number: '+15551234567' } }), want: '+15551234567' },
    { desc: 'body JSON number value', spec: ['body:count'], ex: json({ count: 3 }), want: '3' },
    { desc: 'body JSON object value → no key', spec: ['body:customer'], ex: json({ customer: { number: '1' } }), want: undefined },
    { desc: 'body JSON path through a scalar → no key', spec: ['body:a.b.c'], ex: json({ a: { b: 'x' } }), want: undefined },
    { desc: 'body missing field → no key', spec: ['body:To'], ex: form('From=1'), want: undefined },
    {
      desc: 'body unparsable JSON → no key',
      spec: ['body:To'],
      ex: { body: Buffer.from('{not json'), headers: { 'content-type': 'application/json' } },
      want: undefined,
    },
    {
      desc: 'body with an unknown content type → no key',
      spec: ['body:To'],
      ex: { body: Buffer.from('To=1'), headers: { 'content-type': 'text/plain' } },
      want: undefined,
    },
    { desc: 'no body → no key', spec: ['body:To'], ex: {}, want: undefined },
    { desc: 'body-prefix keeps + and digits, then the first N', spec: ['body-prefix:To:5'], ex: form('To=%2B1%20(555)%20867-5310'), want: '+1555' },
    { desc: 'body-prefix from JSON dot path', spec: ['body-prefix:customer.number:4'], ex: json({ customer: { number: '+44 7700 900123' } }), want: '+447' },
    {
      desc: 'two parts joined',
      spec: ['account', 'body:To'],
      ex: { upstreamPath: '/2010-04-01/Accounts/AC1/Messages.json', ...form('To=%2B1555') },
      want: 'AC1\u0000+1555',
    },
    { desc: 'two parts, one missing → no key', spec: ['client', 'header:X-Tenant'], ex: { clientKey: 'c' }, want: undefined },
  ];
  it.each(rows)('$desc', ({ spec, ex, want }) => {
    expect(keyFn(spec)(fakeExchange(ex))).toBe(want);
  });

  it('authorization is a short hash, never the credential itself', () => {
    const key = keyFn(['authorization']);
    const a = key(fakeExchange({ authorization: 'Bearer sk_live_very_secret' }));
    const b = key(fakeExchange({ authorization: 'Bearer sk_live_other' }));
    expect(a).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(a).not.toContain('secret');
    expect(a).not.toBe(b);
    expect(key(fakeExchange({ authorization: 'Bearer sk_live_very_secret' }))).toBe(a);
  });

  it.each(['header:Authorization', 'header:cookie', 'header:X-Api-Key'])('%s is keyed on a hash, never the credential', (spec) => {
    const name = spec.slice(7).toLowerCase();
    const key = keyFn([spec]);
    const a = key(fakeExchange({ headers: { [name]: 'Bearer sk_live_very_secret' } }));
    const b = key(fakeExchange({ headers: { [name]: 'Bearer sk_live_other' } }));
    expect(a).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(a).not.toContain('secret');
    expect(a).not.toBe(b);
    expect(key(fakeExchange({ headers: { [name]: 'Bearer sk_live_very_secret' } }))).toBe(a);
    expect(key(fakeExchange({}))).toBeUndefined();
  });

  it('an unknown key part is refused at build time', () => {
    expect(() => keyFn(['phone'])).toThrow(/unknown key part phone/);
  });

  it('parses the body once per request', () => {
    const ex = fakeExchange(form('To=1&From=2'));
    expect(bodyField(ex, 'To')).toBe('1');
    expect(ex.fields).toBeInstanceOf(URLSearchParams);
    (ex.fields as URLSearchParams).set('From', 'cached');
    expect(bodyField(ex, 'From')).toBe('cached');
  });
});

describe('isPhoneKey', () => {
  const rows = [
    { desc: 'body field', spec: ['body:To'], want: true },
    { desc: 'body prefix', spec: ['body-prefix:To:5'], want: true },
    { desc: 'mixed with client', spec: ['client', 'body:From'], want: true },
    { desc: 'client only', spec: ['client'], want: false },
    { desc: 'account', spec: ['account'], want: false },
  ];
  it.each(rows)('$desc', ({ spec, want }) => {
    expect(isPhoneKey(spec)).toBe(want);
  });
});

describe('maskPhone', () => {
  const rows = [
    { desc: 'E.164 number keeps the last four', value: '+15558675310', want: '********5310' },
    { desc: 'five characters', value: '12345', want: '*2345' },
    { desc: 'four characters are fully masked', value: '1234', want: '****' },
    { desc: 'short values are fully masked', value: '12', want: '****' },
    { desc: 'empty', value: '', want: '****' },
  ];
  it.each(rows)('$desc', ({ value, want }) => {
    expect(maskPhone(value)).toBe(want);
  });

  it('never contains more than four characters of the input', () => {
    const v = '+447700900123';
    const masked = maskPhone(v);
    expect(masked).toHaveLength(v.length);
    expect(masked).not.toContain('7700');
  });
});

describe('maskKey', () => {
  const sid = `AC${'0'.repeat(28)}beef`;
  it.each([
    ['a phone number', '+15558675310', '********5310'],
    ['digits without +', '15558675310', '*******5310'],
    ['an account SID', sid, 'AC…beef'],
    ['a SID inside a composite key', `${sid}|+15558675310`, 'AC…beef|********5310'],
    ['a peer address passes', '10.1.2.3', '10.1.2.3'],
    ['a plain client id passes', 'billing-worker', 'billing-worker'],
  ])('%s', (_d, v, want) => {
    expect(maskKey(v)).toBe(want);
  });
});

describe('repeatedKeyField', () => {
  const raw = (text: string): FakeExchangeInit => ({ body: Buffer.from(text), headers: { 'content-type': 'application/json' } });
  const rows: { desc: string; fields: string[]; ex: FakeExchangeInit; want: string | undefined }[] = [
    { desc: 'form, once', fields: ['To'], ex: form('To=1&From=2'), want: undefined },
    { desc: 'form, twice', fields: ['To'], ex: form('To=1&From=2&To=3'), want: 'To' },
    { desc: 'form, encoded name', fields: ['To'], ex: form('To=1&%54%6f=3'), want: 'To' },
    { desc: 'form, encoded name alone is the field', fields: ['To'], ex: form('%54o=1'), want: undefined },
    { desc: 'form, bracket variant', fields: ['To'], ex: form('To%5B0%5D=1'), want: 'To' },
    { desc: 'form, other fields repeated', fields: ['To'], ex: form('To=1&MediaUrl=a&MediaUrl=b'), want: undefined },
    { desc: 'json, flat duplicate', fields: ['To'], ex: raw('{"To":"1","To":"2"}'), want: 'To' },
    { desc: 'json, name inside a string value is not a key', fields: ['To'], ex: raw('{"To":"1","Body":"\\"To\\": {[,"}'), want: undefined },
    { desc: 'json, same name in sibling objects', fields: ['a.n'], ex: raw('{"a":{"n":1},"b":{"n":2},"c":[{"n":3}]}'), want: undefined },
    { desc: 'json, duplicate deep in an unwatched branch', fields: ['a.n'], ex: raw('{"b":{"n":1,"n":2},"a":{"n":3}}'), want: undefined },
    { desc: 'json, escaped duplicate', fields: ['a.n'], ex: raw('{"a":{"n":1,"\\u006e":2}}'), want: 'a.n' },
    {
      desc: 'json, deep nest skipped without recursion',
      fields: ['To'],
      ex: raw(`{"x":${'['.repeat(50_000)}${']'.repeat(50_000)},"To":"1","To":"2"}`),
      want: 'To',
    },
  ];
  for (const r of rows) {
    it(r.desc, () => {
      expect(repeatedKeyField(fakeExchange(r.ex), r.fields)).toBe(r.want);
    });
  }
});
