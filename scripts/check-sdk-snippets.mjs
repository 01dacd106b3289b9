// Checks the README's SDK snippets against the real SDKs (twilio, @vapi-ai/server-sdk: pinned dev
// dependencies, so nothing is fetched here). First every ```ts block of the README is compiled
// with `tsc --strict` (a fragment gets the SDK imports and `declare`s for the names it borrows from
// the text around it); then the snippets' behaviour runs against a running Breakwater and a fake
// upstream on 127.0.0.1.
//   npm run check:sdk
import http from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { AsyncLocalStorage } from 'node:async_hooks';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import twilio from 'twilio';
import { VapiClient } from '@vapi-ai/server-sdk';

const root = fileURLToPath(new URL('../', import.meta.url));
let failed = 0;
const check = (label, ok, detail = '') => {
  if (!ok) failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}${detail ? ` — ${detail}` : ''}`);
};

// --- 1. Compile every README snippet with tsc --strict ---
/** Names README fragments use from the prose around them, with their types. */
const BORROWED = {
  vapi: 'VapiClient',
  client: 'ReturnType<typeof twilio>',
  appointment: '{ id: string }',
  order: '{ id: string }',
  assistantId: 'string',
  number: 'string',
  to: 'string',
  from: 'string',
  body: 'string',
};
const snippets = [...readFileSync(join(root, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
const dir = mkdtempSync(join(root, '.sdk-snippets-'));
try {
  const files = snippets.map((code, i) => {
    const head = [];
    if (!/^import twilio\b/m.test(code)) head.push("import twilio from 'twilio';");
    if (!/^import type RequestClient\b/m.test(code)) head.push("import type RequestClient from 'twilio/lib/base/RequestClient.js';");
    if (!/^import \{ VapiClient \}/m.test(code)) head.push("import { VapiClient } from '@vapi-ai/server-sdk';");
    for (const [name, type] of Object.entries(BORROWED)) {
      const defined = new RegExp(`\\b(?:const|let|class|function)\\s+${name}\\b`).test(code);
      if (!defined && new RegExp(`\\b${name}\\b`).test(code)) head.push(`declare const ${name}: ${type};`);
    }
    const file = join(dir, `snippet-${i + 1}.mts`);
    writeFileSync(file, `${head.join('\n')}\n${code}\nexport {};\n`);
    return file;
  });
  const tsc = spawnSync(
    process.execPath,
    [
      join(root, 'node_modules/typescript/bin/tsc'),
      '--strict',
      '--noEmit',
      '--skipLibCheck',
      '--target',
      'es2022',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--types',
      'node',
      ...files,
    ],
    { cwd: root, encoding: 'utf8' },
  );
  check(
    `README: ${snippets.length} TypeScript snippets compile with tsc --strict`,
    snippets.length >= 4 && tsc.status === 0,
    (tsc.stdout + tsc.stderr).trim().slice(0, 2000),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// --- 2. Run the snippets' behaviour against Breakwater and a fake upstream ---
const bin = fileURLToPath(new URL('../bin/breakwater.js', import.meta.url));

const seen = [];
const up = http
  .createServer((q, s) => {
    let b = '';
    q.on('data', (c) => (b += c));
    q.on('end', () => {
      seen.push({ method: q.method, url: q.url, host: q.headers.host, auth: q.headers.authorization, idem: q.headers['idempotency-key'], body: b });
      s.writeHead(q.url.includes('Messages') ? 201 : 201, { 'content-type': 'application/json' });
      s.end(
        q.url.includes('Messages')
          ? JSON.stringify({ sid: 'SM' + '0'.repeat(32), status: 'queued', to: '+15558675310', body: 'hi' })
          : JSON.stringify({ id: '11111111-1111-4111-8111-111111111111', status: 'queued' }),
      );
    });
  })
  .listen(0, '127.0.0.1');
await new Promise((r) => up.once('listening', r));
const upPort = up.address().port;
/** A port free right now on 127.0.0.1 (the OS picks it). */
async function freePort() {
  const srv = http.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}
const [proxyPort, adminPort] = [await freePort(), await freePort()];
const SID = 'AC' + 'a'.repeat(32);
const proxy = spawn(process.execPath, [bin, 'start'], {
  env: {
    ...process.env,
    PROXY_HOST: '127.0.0.1',
    PROXY_PORT: String(proxyPort),
    ADMIN_PORT: String(adminPort),
    TWILIO_BASE_URL: `http://127.0.0.1:${upPort}`,
    VAPI_BASE_URL: `http://127.0.0.1:${upPort}`,
    TWILIO_HOST_TARGET: `http://127.0.0.1:${upPort}`,
    VAPI_HOST_TARGET: `http://127.0.0.1:${upPort}`,
    TWILIO_ACCOUNT_SID: SID,
    TWILIO_AUTH_TOKEN: 'held-token',
    VAPI_API_KEY: 'held-key',
    LOG_LEVEL: 'warn',
  },
  stdio: 'inherit',
});
// Ready when /readyz answers 200: a bounded poll (10 s).
for (let i = 0; i < 100; i++) {
  const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
    (r) => r.ok,
    () => false,
  );
  if (ok) break;
  await new Promise((r) => setTimeout(r, 100));
}
process.env.BREAKWATER_URL = `http://127.0.0.1:${proxyPort}`;
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
  const client = twilio(SID, 'breakwater', { httpClient: new BreakwaterHttpClient() });
  const m = await idem.run('sms-1', () => client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }));
  const again = await idem.run('sms-1', () => client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }));
  const posts = seen.filter((x) => x.method === 'POST' && x.url.includes('Messages'));
  check(
    'Twilio SDK: message create reaches /2010-04-01/Accounts/<sid>/Messages.json through /twilio',
    m.sid?.startsWith('SM') && posts[0]?.url === `/2010-04-01/Accounts/AC${'a'.repeat(32)}/Messages.json`,
    posts[0]?.url,
  );
  check(
    'Twilio SDK: a repeat with the same Idempotency-Key is replayed, one upstream POST',
    posts.length === 1 && again.sid === m.sid,
    `${posts.length} POSTs`,
  );
  check('Twilio SDK: the Idempotency-Key is not sent upstream', posts[0]?.idem === undefined);
  check(
    "Twilio SDK: the placeholder `breakwater` arrives as the sidecar's credentials",
    posts[0]?.auth === `Basic ${Buffer.from(`${SID}:held-token`).toString('base64')}`,
  );
  const vapi = new VapiClient({ token: 'breakwater', baseUrl: `http://127.0.0.1:${proxyPort}/vapi`, maxRetries: 0 });
  const call = await vapi.calls.create({ assistantId: 'a1', customer: { number: '+15558675310' } }, { headers: { 'Idempotency-Key': 'call-1' } });
  const again2 = await vapi.calls.create({ assistantId: 'a1', customer: { number: '+15558675310' } }, { headers: { 'Idempotency-Key': 'call-1' } });
  const vposts = seen.filter((x) => x.method === 'POST' && x.url === '/call');
  check(
    'Vapi SDK: baseUrl http://…/vapi reaches POST /call, the placeholder replaced by the held key',
    call?.id !== undefined && vposts.at(-1)?.auth === 'Bearer held-key',
    vposts.at(-1)?.url,
  );
  check('Vapi SDK: per-request Idempotency-Key header dedupes the create', vposts.length === 1 && again2?.id === call.id, `${vposts.length} POSTs`);
} catch (e) {
  check('SDK calls ran', false, String(e?.message ?? e).slice(0, 200));
} finally {
  proxy.kill('SIGTERM');
  up.close();
}
console.log(`sdk snippets: ${failed === 0 ? 'all hold' : `${failed} failed`}`);
process.exitCode = failed === 0 ? 0 : 1;
