// Starts Breakwater in-process on the default policy (or a given one) with SPEC environment
// overrides, on free loopback ports, logging into an array the test can read.
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import http from 'node:http';
import pino from 'pino';
import { parsePolicy } from '../../src/policy/load.js';
import { start, type Running } from '../../src/server.js';
import { REDACT_PATHS } from '../../src/log.js';

export const DEFAULT_POLICY = readFileSync(new URL('../../config/policy.yaml', import.meta.url), 'utf8');

export interface TestProxy extends Running {
  logs: string[];
  logLines(): Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startProxy(env: Record<string, string> = {}, policyText = DEFAULT_POLICY): Promise<TestProxy> {
  const policy = parsePolicy(policyText, {
    env: { PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0', LOG_LEVEL: 'info', ...env },
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  const log = pino({ level: policy.logging.level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink);
  const running = await start({ configPath: '(test)', policy, log });
  return {
    ...running,
    logs,
    logLines: () =>
      logs
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    close: () => running.shutdown(),
  };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

export function request(
  port: number,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

export async function metricsText(adminPort: number): Promise<string> {
  return (await request(adminPort, 'GET', '/metrics')).text;
}

export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
