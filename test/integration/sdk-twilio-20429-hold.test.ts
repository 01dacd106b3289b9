// "An app that checks Twilio's 20429 keeps working when the 429 is Breakwater's hold", with the
// real twilio SDK (6.3.1). Twilio's own 429 reaches the app as it was sent: RestException with
// status 429 and code 20429. While Breakwater then holds the account, it answers locally with its
// SPEC error body, whose `code` is the string "upstream_rate_limited": the SDK copies body.code
// into err.code, so `err.code === 20429` cannot be true for a hold (SPEC fixes that field), but the
// HTTP status is 429 for both. The check that keeps working is `err.status === 429`, the way Twilio
// documents 20429 ("HTTP 429 Too Many Requests").
import twilio from 'twilio';
import type RequestClient from 'twilio/lib/base/RequestClient.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const ACCOUNT_SID = 'AC22222222222222222222222222222222';

function sidecarClient(port: number): twilio.RequestClient {
  class BreakwaterHttpClient extends twilio.RequestClient {
    override request<TData>(opts: RequestClient.RequestOptions<TData>) {
      const url = new URL(opts.uri);
      opts.uri = `http://127.0.0.1:${port}/twilio${url.pathname}${url.search}`;
      return super.request<TData>(opts);
    }
  }
  return new BreakwaterHttpClient();
}

/** The README's check: Twilio's 20429 and Breakwater's holds and limits are all HTTP 429. */
const isTooManyRequests = (err: unknown): boolean => (err as { status?: unknown } | null)?.status === 429;

describe("an app checking Twilio's 20429 through the real SDK", () => {
  let tw: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // A 429 that persists past the hold's one second send (retryWithin) is what the app sees; off here to see the first.
    ({ twilio: tw, p } = harness = await withProxy({
      env: (up) => ({ TWILIO_HOST_TARGET: up.twilio.url, TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: 'tok_0123456789abcdef0123456789abcdef' }),
      policy: DEFAULT_POLICY.replace('retryWithin: 2 ', 'retryWithin: 0 '),
    }));
  });
  afterAll(() => harness?.close());

  it("sees Twilio's own 429 as code 20429, and Breakwater's hold after it as status 429 with code upstream_rate_limited", async () => {
    const client = twilio(ACCOUNT_SID, 'breakwater', { httpClient: sidecarClient(p.proxyPort) });
    const send = () =>
      client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }).then(
        () => undefined,
        (e: unknown) => e as Record<string, unknown>,
      );
    tw.mode = '429';
    tw.retryAfter = '10';

    const fromTwilio = await send();
    expect(fromTwilio).toMatchObject({ status: 429, code: 20429 });
    const sent = tw.seen.length;
    expect(sent).toBeGreaterThan(0);

    const held = await send();
    // Answered by Breakwater's hold: nothing more reached Twilio.
    expect(tw.seen.length).toBe(sent);
    expect(held).toMatchObject({ status: 429, code: 'upstream_rate_limited' });
    expect(String(held!['message'])).toMatch(/rate-limited this account/);
    // The code check alone misses the hold; the status check sees both.
    expect(held!['code']).not.toBe(20429);
    expect(isTooManyRequests(fromTwilio)).toBe(true);
    expect(isTooManyRequests(held)).toBe(true);
  });
});
