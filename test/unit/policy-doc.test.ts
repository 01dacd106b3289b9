// docs/policy.md is generated from the schema (scripts/policy-doc.mjs). Regenerating it from the
// TypeScript source must give the committed file byte for byte, so the reference cannot drift.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { policySchema } from '../../src/policy/schema.js';

const root = new URL('../../', import.meta.url);
// A URL specifier keeps TypeScript from looking for declarations of the plain-JS script.
const generator = new URL('scripts/policy-doc.mjs', root).href;

async function render(): Promise<string> {
  const { renderPolicyDoc } = (await import(generator)) as { renderPolicyDoc(schema: unknown, policyYaml: string): string };
  return renderPolicyDoc(policySchema, readFileSync(new URL('config/policy.yaml', root), 'utf8'));
}

describe('docs/policy.md', () => {
  it('is what scripts/policy-doc.mjs generates from the current schema and default policy', async () => {
    const committed = readFileSync(new URL('docs/policy.md', root), 'utf8');
    const fresh = await render();
    // On failure: `npm run build && node scripts/policy-doc.mjs`, then commit docs/policy.md.
    expect(committed, 'docs/policy.md is stale: run `npm run build && node scripts/policy-doc.mjs`').toBe(fresh);
  });

  it('documents every key of every section with its describe() line', async () => {
    const doc = await render();
    for (const key of ['drainTimeout', 'halfOpenProbes', 'budgetRatio', 'maxDelay', 'errorRate', 'replace', 'waitTimeout', 'defaultHold']) {
      expect(doc).toContain(`| \`${key}\` |`);
    }
    expect(doc).toContain('Seconds in-flight requests may take to finish on SIGTERM.');
    expect(doc).toContain('Calls slower than this count as failures (null: off).');
    // Idempotency is off unless a policy turns it on, although `enabled` alone defaults to true.
    expect(doc).toMatch(/### `upstreams\.<name>\.idempotency`[\s\S]*?\| `enabled` \| boolean \| `false` \|/);
  });

  it('maps each environment variable of the default policy to the keys it sets', async () => {
    const doc = await render();
    expect(doc).toContain('| `RATE_LIMIT_PER_MINUTE` | `60` | `upstreams.twilio.rateLimits[0].rate`, `upstreams.vapi.rateLimits[0].rate` |');
    expect(doc).toContain('| `TWILIO_API_KEY_SID` | the value of `TWILIO_ACCOUNT_SID` | `upstreams.twilio.credentials.username` |');
    for (const v of [
      'PROXY_PORT',
      'ADMIN_HOST',
      'INTEGRATIONS_STUB_MODE',
      'REDIS_URL',
      'UPSTREAM_TIMEOUT',
      'VAPI_API_KEY',
      'CIRCUIT_BREAKER_RECOVERY_TIMEOUT',
    ]) {
      expect(doc).toContain(`| \`${v}\` |`);
    }
  });
});
