// Credential custody per SPEC: the placeholder secret `breakwater` (Twilio Basic `<sid>:breakwater`,
// Vapi `Bearer breakwater`) is replaced by held credentials, or refused 401 credentials_missing
// — never sent — when none are held. Any other Authorization passes unless `replace` is set.
import { describe, expect, it } from 'vitest';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { authorizationValue, classifyAuthorization, credentials, type CredentialConfig } from '../../../src/stages/credentials.js';
import { fakeExchange, SENT_200 } from '../support/exchange.js';

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const SID = 'AC11111111111111111111111111111111';
const HELD_BASIC = basic(SID, 'real-token');
const none: CredentialConfig = { type: 'none', username: '', password: '', token: '', replace: false };
const twilio: CredentialConfig = { ...none, type: 'basic', username: SID, password: 'real-token' };
const vapi: CredentialConfig = { ...none, type: 'bearer', token: 'real-key' };

async function run(c: CredentialConfig, authorization: string | undefined): Promise<{ reply: Reply; forwarded: boolean; sent: string | undefined }> {
  const ex = fakeExchange({ headers: authorization === undefined ? {} : { authorization } });
  let forwarded = false;
  let sent: string | undefined;
  const reply = await credentials(c)(ex, (e: Exchange) => {
    forwarded = true;
    sent = e.authorization;
    return Promise.resolve(SENT_200);
  });
  return { reply, forwarded, sent };
}

describe('classifyAuthorization', () => {
  const rows: { desc: string; value: string; want: ReturnType<typeof classifyAuthorization> }[] = [
    { desc: 'Twilio SDK placeholder (account SID)', value: basic(SID, 'breakwater'), want: 'placeholder' },
    { desc: 'Twilio SDK placeholder (API key SID)', value: basic('SK22222222222222222222222222222222', 'breakwater'), want: 'placeholder' },
    { desc: 'scheme in lower case', value: basic(SID, 'breakwater').replace('Basic', 'basic'), want: 'placeholder' },
    { desc: 'Vapi SDK placeholder', value: 'Bearer breakwater', want: 'placeholder' },
    { desc: 'Bearer scheme upper case', value: 'BEARER breakwater', want: 'placeholder' },
    { desc: 'the secret is case-sensitive', value: 'Bearer Breakwater', want: 'credential' },
    { desc: 'a real Basic credential', value: HELD_BASIC, want: 'credential' },
    { desc: 'placeholder as user, not password', value: basic('breakwater', 'x'), want: 'credential' },
    { desc: 'password merely ends with it', value: basic(SID, 'xbreakwater'), want: 'credential' },
    { desc: 'a real Bearer token', value: 'Bearer sk-live-123', want: 'credential' },
    { desc: 'empty Bearer', value: 'Bearer ', want: 'empty' },
    { desc: 'bare Bearer', value: 'Bearer', want: 'empty' },
    { desc: 'another scheme', value: 'Digest username="x"', want: 'credential' },
    { desc: 'empty user-id, placeholder password', value: basic('', 'breakwater'), want: 'placeholder' },
    { desc: 'the password starts at the first colon (RFC 7617)', value: basic(SID, 'x:breakwater'), want: 'credential' },
    { desc: 'Basic with no colon at all', value: `Basic ${Buffer.from('breakwater').toString('base64')}`, want: 'credential' },
    { desc: 'whitespace around the Basic token', value: `Basic \t${Buffer.from(`${SID}:breakwater`).toString('base64')} `, want: 'placeholder' },
    { desc: 'Bearer placeholder with trailing space', value: 'Bearer breakwater ', want: 'placeholder' },
    { desc: 'Bearer with a second word', value: 'Bearer breakwater extra', want: 'credential' },
  ];
  it.each(rows)('$desc', ({ value, want }) => {
    expect(classifyAuthorization(value)).toBe(want);
  });
});

describe('credentials stage', () => {
  const rows: { desc: string; c: CredentialConfig; auth: string | undefined; want: string | undefined | 'refused' }[] = [
    { desc: 'Twilio placeholder is replaced by held Basic', c: twilio, auth: basic(SID, 'breakwater'), want: HELD_BASIC },
    { desc: 'Vapi placeholder is replaced by held Bearer', c: vapi, auth: 'Bearer breakwater', want: 'Bearer real-key' },
    { desc: 'Twilio placeholder with nothing held is refused', c: { ...twilio, password: '' }, auth: basic(SID, 'breakwater'), want: 'refused' },
    { desc: 'Vapi placeholder with nothing held is refused', c: { ...vapi, token: '' }, auth: 'Bearer breakwater', want: 'refused' },
    { desc: 'placeholder on an upstream with type none is refused', c: none, auth: 'Bearer breakwater', want: 'refused' },
    { desc: 'no Authorization gets the held one', c: vapi, auth: undefined, want: 'Bearer real-key' },
    { desc: 'no Authorization and none held sends none', c: none, auth: undefined, want: undefined },
    { desc: 'an app credential passes', c: vapi, auth: 'Bearer app-key', want: 'Bearer app-key' },
    { desc: 'an app credential is replaced under replace: true', c: { ...vapi, replace: true }, auth: 'Bearer app-key', want: 'Bearer real-key' },
    { desc: 'replace: true with nothing held keeps the app credential', c: { ...none, replace: true }, auth: 'Bearer app-key', want: 'Bearer app-key' },
    { desc: 'an empty Bearer gets the held one', c: vapi, auth: 'Bearer ', want: 'Bearer real-key' },
    { desc: 'an empty Bearer with nothing held sends none', c: none, auth: 'Bearer ', want: undefined },
    {
      desc: 'a placeholder under replace: true is replaced like any placeholder',
      c: { ...vapi, replace: true },
      auth: 'Bearer breakwater',
      want: 'Bearer real-key',
    },
    { desc: 'a Twilio placeholder sent to a Bearer upstream gets its held Bearer', c: vapi, auth: basic(SID, 'breakwater'), want: 'Bearer real-key' },
  ];
  it.each(rows)('$desc', async ({ c, auth, want }) => {
    const { reply, forwarded, sent } = await run(c, auth);
    if (want === 'refused') {
      expect(forwarded).toBe(false);
      expect(reply).toMatchObject({ kind: 'error', code: 'credentials_missing', status: 401 });
    } else {
      expect(forwarded).toBe(true);
      expect(sent).toBe(want);
    }
  });
});

describe('authorizationValue', () => {
  const rows: { desc: string; c: CredentialConfig; want: string | undefined }[] = [
    { desc: 'basic: user and password', c: twilio, want: HELD_BASIC },
    { desc: 'basic without a password holds nothing', c: { ...twilio, password: '' }, want: undefined },
    { desc: 'basic without a user holds nothing', c: { ...twilio, username: '' }, want: undefined },
    { desc: 'bearer: the token', c: vapi, want: 'Bearer real-key' },
    { desc: 'bearer without a token holds nothing', c: { ...vapi, token: '' }, want: undefined },
    { desc: 'type none holds nothing, whatever else is set', c: { ...none, username: 'u', password: 'p', token: 't' }, want: undefined },
  ];
  it.each(rows)('$desc', ({ c, want }) => {
    expect(authorizationValue(c)).toBe(want);
  });
});
