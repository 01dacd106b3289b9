// Runs the README's SDK snippets (Twilio httpClient with Idempotency-Key, Vapi baseUrl with
// per-request headers) against the real SDKs, a running Breakwater and a fake upstream on
// 127.0.0.1. The SDKs are not project dependencies: they are installed once into a cache folder.
//   npm run check:sdk
import http from 'node:http';
import { spawn, execSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { AsyncLocalStorage } from 'node:async_hooks';
import { fileURLToPath } from 'node:url';

const cache = '/tmp/bw-sdk-check';
if (!existsSync(`${cache}/node_modules/twilio`) || !existsSync(`${cache}/node_modules/@vapi-ai/server-sdk`)) {
  mkdirSync(cache, { recursive: true });
  execSync('npm init -y >/dev/null && npm i --no-audit --no-fund twilio@6 @vapi-ai/server-sdk@2 >/dev/null', { cwd: cache, shell: '/bin/bash', timeout: 120_000 });
}
const load = createRequire(`${cache}/index.js`);
const twilio = load('twilio');
const { VapiClient } = load('@vapi-ai/server-sdk');
const bin = fileURLToPath(new URL('../bin/breakwater.js', import.meta.url));
let failed = 0;
const check = (label, ok, detail = '') => {
  if (!ok) failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}${detail ? ` — ${detail}` : ''}`);
};

const seen = [];
const up = http.createServer((q, s) => { let b = ''; q.on('data', (c) => (b += c)); q.on('end', () => {
  seen.push({ method: q.method, url: q.url, host: q.headers.host, auth: q.headers.authorization, idem: q.headers['idempotency-key'], body: b });
  s.writeHead(q.url.includes('Messages') ? 201 : 201, { 'content-type': 'application/json' });
  s.end(q.url.includes('Messages') ? JSON.stringify({ sid: 'SM' + '0'.repeat(32), status: 'queued', to: '+15558675310', body: 'hi' }) : JSON.stringify({ id: '11111111-1111-4111-8111-111111111111', status: 'queued' }));
}); }).listen(0, '127.0.0.1');
await new Promise((r) => up.once('listening', r));
const upPort = up.address().port;
const proxy = spawn(process.execPath, [bin, 'start'], { env: { ...process.env, PROXY_HOST: '127.0.0.1', PROXY_PORT: '18481', ADMIN_PORT: '19481', TWILIO_BASE_URL: `http://127.0.0.1:${upPort}`, VAPI_BASE_URL: `http://127.0.0.1:${upPort}`, LOG_LEVEL: 'warn' }, stdio: 'inherit' });
await new Promise((r) => setTimeout(r, 1500));
process.env.BREAKWATER_URL = 'http://127.0.0.1:18481';
try {
  // --- README snippet (JS form of the TypeScript) ---
  const idem = new AsyncLocalStorage();
  class BreakwaterHttpClient extends twilio.RequestClient {
    request(opts) {
      const url = new URL(opts.uri);
      const sidecar = process.env.BREAKWATER_URL ?? 'http://localhost:8080';
      const key = idem.getStore();
      if (key && opts.method?.toUpperCase() === 'POST') opts.headers = { ...opts.headers, 'Idempotency-Key': key };
      if (url.hostname === 'api.twilio.com') {
        opts.uri = `${sidecar}/twilio${url.pathname}${url.search}`;
      } else {
        opts.uri = `${sidecar}${url.pathname}${url.search}`;
        opts.headers = { ...opts.headers, Host: url.host };
      }
      return super.request(opts);
    }
  }
  const client = twilio('AC' + 'a'.repeat(32), 'token', { httpClient: new BreakwaterHttpClient() });
  const m = await idem.run('sms-1', () => client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }));
  const again = await idem.run('sms-1', () => client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }));
  const posts = seen.filter((x) => x.method === 'POST' && x.url.includes('Messages'));
  check('Twilio SDK: message create reaches /2010-04-01/Accounts/<sid>/Messages.json through /twilio', m.sid?.startsWith('SM') && posts[0]?.url === `/2010-04-01/Accounts/AC${'a'.repeat(32)}/Messages.json`, posts[0]?.url);
  check('Twilio SDK: a repeat with the same Idempotency-Key is replayed, one upstream POST', posts.length === 1 && again.sid === m.sid, `${posts.length} POSTs`);
  check('Twilio SDK: the Idempotency-Key is not sent upstream', posts[0]?.idem === undefined);
  const vapi = new VapiClient({ token: 'vk', baseUrl: 'http://127.0.0.1:18481/vapi' });
  const call = await vapi.calls.create({ assistantId: 'a1', customer: { number: '+15558675310' } }, { headers: { 'Idempotency-Key': 'call-1' } });
  const again2 = await vapi.calls.create({ assistantId: 'a1', customer: { number: '+15558675310' } }, { headers: { 'Idempotency-Key': 'call-1' } });
  const vposts = seen.filter((x) => x.method === 'POST' && x.url === '/call');
  check('Vapi SDK: baseUrl http://…/vapi reaches POST /call with its Bearer token', call?.id !== undefined && vposts.at(-1)?.auth === 'Bearer vk', vposts.at(-1)?.url);
  check('Vapi SDK: per-request Idempotency-Key header dedupes the create', vposts.length === 1 && again2?.id === call.id, `${vposts.length} POSTs`);
} catch (e) {
  check('SDK calls ran', false, String(e?.message ?? e).slice(0, 200));
} finally {
  proxy.kill('SIGTERM');
  up.close();
}
console.log(`sdk snippets: ${failed === 0 ? 'all hold' : `${failed} failed`}`);
process.exitCode = failed === 0 ? 0 : 1;
