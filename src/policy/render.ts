// `validate` output: the effective policy as readable tables. Secrets are shown only as
// "set"/"unset", and credentials inside URLs are masked.
import type { Policy } from './schema.js';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function maskUrl(url: string): string {
  // Userinfo runs to the last `@` before the path: a raw `@` in a password is common, and
  // ioredis (WHATWG URL) reads `redis://u:p@ss@host` as password `p@ss`.
  return url.replace(/\/\/([^/?#]*)@/, (whole, info: string) => {
    const colon = info.indexOf(':');
    // User-info without a colon is as often a token (`https://<token>@host`, `redis://<password>@host`)
    // as a user name: mask all of it.
    if (colon < 0) return info === '' ? whole : '//***@';
    return `//${info.slice(0, colon)}:***@`;
  });
}

const secret = (v: string) => (v === '' ? 'unset' : 'set');

/** A parsed duration (ms) as the file wrote it. */
const secs = (ms: number) => `${ms / 1000}s`;

export function renderPolicy(p: Policy, file: string): string {
  const s = p.server;
  const out: string[] = [];
  out.push(`policy ${file}: OK`, '');
  out.push(
    table([
      ['setting', 'value'],
      ['proxy listener', `${s.host}:${s.port}`],
      ['admin listener', `${s.adminHost}:${s.adminPort}`],
      ['stub mode', String(p.stubMode)],
      ['rate-limit store', p.store.type === 'redis' ? `redis ${maskUrl(p.store.redisUrl)} (fallback after ${secs(p.store.timeout)})` : 'memory'],
      ['log level', p.logging.level],
      ['max body', `${s.maxBodyBytes} bytes`],
      ['drain timeout', secs(s.drainTimeout)],
      ['trusted proxies', s.trustedProxies.join(', ') || '(none)'],
    ]),
  );
  out.push('', 'upstreams');
  out.push(
    table([
      ['name', 'target', 'prefix', 'hosts', 'timeout', 'breaker', 'retry', 'bulkhead', 'credentials', 'stub'],
      ...Object.entries(p.upstreams).map(([name, u]) => [
        name,
        maskUrl(u.baseUrl),
        u.prefix ?? '-',
        u.hosts.join(',') || '-',
        secs(u.timeout),
        `${u.breaker.enabled ? 'on' : 'observe-only'} ${u.breaker.threshold} fails, ${secs(u.breaker.recoveryTimeout)} open${u.breaker.failureRatio !== null ? `, ratio ${u.breaker.failureRatio}` : ''}`,
        `${u.retry.attempts}x, budget ${Math.round(u.retry.budgetRatio * 100)}%`,
        `${u.bulkhead.maxConcurrent}${u.bulkhead.queue ? ` +${u.bulkhead.queue} queued` : ''}`,
        u.credentials.type === 'none'
          ? 'none'
          : `${u.credentials.type} ${u.credentials.type === 'basic' ? `user=${secret(u.credentials.username)} password=${secret(u.credentials.password)}` : `token=${secret(u.credentials.token)}`}${u.credentials.replace ? ' (replaces app)' : ''}`,
        String(p.stubMode || u.stub),
      ]),
    ]),
  );
  const limits = Object.entries(p.upstreams).flatMap(([name, u]) =>
    u.rateLimits.map((l) => [
      name,
      l.name,
      `${l.rate}/${secs(l.per)}`,
      String(l.burst ?? l.rate),
      l.key.join('+'),
      l.route ?? '(all)',
      l.maxDelay ? `wait ≤${secs(l.maxDelay)}` : 'reject',
      l.shadow ? 'shadow' : 'enforce',
    ]),
  );
  if (limits.length > 0) {
    out.push('', 'rate limits');
    out.push(table([['upstream', 'limit', 'rate', 'burst', 'key', 'route', 'when empty', 'mode'], ...limits]));
  }
  out.push('', 'send safety');
  out.push(
    table([
      ['upstream', 'idempotency', 'hold on 429'],
      ...Object.entries(p.upstreams).map(([name, u]) => [
        name,
        u.idempotency.enabled ? `${u.idempotency.header}, ttl ${secs(u.idempotency.ttl)}` : 'off',
        u.holdOn429.enabled ? `by ${u.holdOn429.key.join('+')}, ≤${secs(u.holdOn429.maxHold)}` : 'off',
      ]),
    ]),
  );
  return `${out.join('\n')}\n`;
}
