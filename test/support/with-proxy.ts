// The set-up most integration suites share: a fake Twilio and a fake Vapi on loopback, and the
// proxy in front of both (TWILIO_BASE_URL and VAPI_BASE_URL point at the fakes, so nothing can
// reach a real provider). `close()` takes all three down, proxy first, so no request is still
// on its way to a fake that is already gone.
import { fakeUpstream, type FakeUpstream } from './fake-upstream.js';
import { DEFAULT_POLICY, startProxy, type TestProxy } from './proxy.js';

export interface Upstreams {
  readonly twilio: FakeUpstream;
  readonly vapi: FakeUpstream;
}

export interface ProxyHarness extends Upstreams {
  readonly p: TestProxy;
  close(): Promise<void>;
}

export interface WithProxyOptions {
  /** Runs on the fake Twilio before the proxy starts (a handler, a mode). */
  twilio?: (up: FakeUpstream) => void;
  /** Runs on the fake Vapi before the proxy starts. */
  vapi?: (up: FakeUpstream) => void;
  /** More environment overrides; a function gets the fakes (for *_HOST_TARGET and the like). Its keys win. */
  env?: Record<string, string> | ((up: Upstreams) => Record<string, string>);
  /** Policy text; the shipped default when absent. */
  policy?: string;
}

export async function withProxy(opts: WithProxyOptions = {}): Promise<ProxyHarness> {
  const twilio = await fakeUpstream('twilio');
  const vapi = await fakeUpstream('vapi').catch(async (err: unknown) => {
    await twilio.close();
    throw err;
  });
  const closeFakes = async () => {
    await twilio.close();
    await vapi.close();
  };
  let p: TestProxy;
  try {
    opts.twilio?.(twilio);
    opts.vapi?.(vapi);
    const extra = typeof opts.env === 'function' ? opts.env({ twilio, vapi }) : (opts.env ?? {});
    p = await startProxy({ TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url, ...extra }, opts.policy ?? DEFAULT_POLICY);
  } catch (err) {
    await closeFakes();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    twilio,
    vapi,
    p,
    // Idempotent: a suite may close early (to test shutdown) and again in afterAll.
    close: () =>
      (closed ??= (async () => {
        try {
          await p.close();
        } finally {
          await closeFakes();
        }
      })()),
  };
}
