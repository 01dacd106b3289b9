// Stub templates: compiled once, filled per request.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { compileTemplate } from '../../../src/stub-template.js';
import { fakeExchange, type FakeExchangeInit } from '../support/exchange.js';
import { bodyField } from '../../../src/pipeline/keys.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function render(template: unknown, params: Record<string, string> = {}, ex: FakeExchangeInit = {}) {
  const x = fakeExchange(ex);
  return compileTemplate(template)({ body: (path) => bodyField(x, path), query: x.query, params });
}

const form = (body: string): FakeExchangeInit => ({ body: Buffer.from(body), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

describe('compileTemplate', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2025-03-04T05:06:07.089Z'));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const rows: { desc: string; template: unknown; params?: Record<string, string>; ex?: FakeExchangeInit; want: unknown }[] = [
    { desc: 'plain string', template: 'queued', want: 'queued' },
    { desc: 'number', template: 3, want: 3 },
    { desc: 'boolean', template: false, want: false },
    { desc: 'null', template: null, want: null },
    { desc: 'whole param', template: '{{param.AccountSid}}', params: { AccountSid: 'AC1' }, want: 'AC1' },
    { desc: 'whole param with spaces inside the braces', template: '{{ param.AccountSid }}', params: { AccountSid: 'AC1' }, want: 'AC1' },
    { desc: 'whole param missing → null', template: '{{param.Nope}}', want: null },
    { desc: 'partial param', template: '/Accounts/{{param.AccountSid}}/Messages.json', params: { AccountSid: 'AC1' }, want: '/Accounts/AC1/Messages.json' },
    { desc: 'partial param missing → empty text', template: '/Accounts/{{param.Nope}}.json', want: '/Accounts/.json' },
    { desc: 'two templates in one string', template: '{{param.a}}-{{param.b}}', params: { a: 'x', b: 'y' }, want: 'x-y' },
    { desc: 'whole body field (form)', template: '{{body.To}}', ex: form('To=%2B15558675310'), want: '+15558675310' },
    { desc: 'whole body field missing → null', template: '{{body.MessagingServiceSid}}', ex: form('To=1'), want: null },
    {
      desc: 'JSON body dot path',
      template: '{{body.customer.number}}',
      ex: { body: Buffer.from('{"customer":{"number":"+1555"}}'), headers: { 'content-type': 'application/json' } },
      want: '+1555',
    },
    { desc: 'no body at all → null', template: '{{body.To}}', want: null },
    { desc: 'query field', template: '{{query.PageSize}}', ex: { query: '?PageSize=20' }, want: '20' },
    { desc: 'query field missing → null', template: '{{query.PageSize}}', ex: { query: '' }, want: null },
    { desc: 'now (Twilio date format)', template: '{{now}}', want: 'Tue, 04 Mar 2025 05:06:07 +0000' },
    { desc: 'nowIso', template: '{{nowIso}}', want: '2025-03-04T05:06:07.089Z' },
    {
      desc: 'nested objects and arrays',
      template: { a: ['{{param.x}}', { b: '{{param.y}}' }], n: 1 },
      params: { x: '1', y: '2' },
      want: { a: ['1', { b: '2' }], n: 1 },
    },
  ];
  it.each(rows)('$desc', ({ template, params, ex, want }) => {
    expect(render(template, params, ex)).toEqual(want);
  });

  it('{{sid XX}} mints a Twilio-style id and {{sid}} repeats it within one answer', () => {
    const out = render({ sid: '{{sid SM}}', uri: '/Messages/{{sid}}.json' }) as { sid: string; uri: string };
    expect(out.sid).toMatch(/^SM[0-9a-f]{32}$/);
    expect(out.uri).toBe(`/Messages/${out.sid}.json`);
  });

  it('each answer gets a fresh sid', () => {
    const f = compileTemplate({ sid: '{{sid CA}}' });
    const a = f({ body: () => undefined, query: '', params: {} }) as { sid: string };
    const b = f({ body: () => undefined, query: '', params: {} }) as { sid: string };
    expect(a.sid).not.toBe(b.sid);
  });

  it('{{sid}} before any {{sid XX}} is null', () => {
    expect(render('{{sid}}')).toBeNull();
  });

  it('{{uuid}} is a v4 UUID, the same everywhere in one answer', () => {
    const out = render({ id: '{{uuid}}', link: 'call/{{uuid}}' }) as { id: string; link: string };
    expect(out.id).toMatch(UUID);
    expect(out.link).toBe(`call/${out.id}`);
  });

  it('an unknown template is refused when compiled, not when answering', () => {
    expect(() => compileTemplate({ a: ['{{nope}}'] })).toThrow('unknown stub template {{nope}}');
    expect(() => compileTemplate('x {{param}} y')).toThrow(/unknown stub template/);
  });

  it('a single brace is plain text', () => {
    expect(render('{param.x}', { x: '1' })).toBe('{param.x}');
  });
});
