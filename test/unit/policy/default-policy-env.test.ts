// The shipped policy's environment contract from the SPEC: the proxy listener defaults to
// loopback (it injects credentials), and TWILIO_HOST_TARGET / VAPI_HOST_TARGET point every
// host-routed request of an upstream at one origin (staging, tests), unset by default.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../../src/policy/load.js';

const DEFAULT_POLICY = readFileSync(new URL('../../../config/policy.yaml', import.meta.url), 'utf8');

describe('default policy: listener and host targets', () => {
  it('binds the proxy to loopback unless PROXY_HOST says otherwise', () => {
    expect(parsePolicy(DEFAULT_POLICY, { env: {} }).server.host).toBe('127.0.0.1');
    expect(parsePolicy(DEFAULT_POLICY, { env: { PROXY_HOST: '0.0.0.0' } }).server.host).toBe('0.0.0.0');
  });

  it('has no host target unless TWILIO_HOST_TARGET / VAPI_HOST_TARGET are set (empty counts as unset)', () => {
    for (const env of [{}, { TWILIO_HOST_TARGET: '', VAPI_HOST_TARGET: '' }]) {
      const p = parsePolicy(DEFAULT_POLICY, { env });
      expect(p.upstreams.twilio!.hostTarget).toBeNull();
      expect(p.upstreams.vapi!.hostTarget).toBeNull();
    }
  });

  it('takes each upstream its own host target', () => {
    const p = parsePolicy(DEFAULT_POLICY, { env: { TWILIO_HOST_TARGET: 'http://127.0.0.1:9999', VAPI_HOST_TARGET: 'http://127.0.0.1:9998' } });
    expect(p.upstreams.twilio!.hostTarget).toBe('http://127.0.0.1:9999');
    expect(p.upstreams.vapi!.hostTarget).toBe('http://127.0.0.1:9998');
  });

  it('refuses a host target that is not an http(s) origin, naming the YAML path', () => {
    expect(() => parsePolicy(DEFAULT_POLICY, { env: { TWILIO_HOST_TARGET: 'ftp://x' } })).toThrow(PolicyError);
    expect(() => parsePolicy(DEFAULT_POLICY, { env: { TWILIO_HOST_TARGET: 'ftp://x' } })).toThrow(/upstreams\.twilio\.hostTarget/);
  });
});
