#!/usr/bin/env node
// The p99 reference of issue 7: the least a Node proxy can do per request. node:http server,
// undici Agent.dispatch with the legacy handler API (the same API Breakwater's forward stage
// uses), hop-by-hop headers stripped, bodies streamed both ways with back-pressure. No routing
// table, no limits, no logs, no metrics.
// Usage: node bench/baseline-undici.mjs <listenPort> <upstreamOrigin>
import http from 'node:http';
import { Agent } from 'undici';

const [port, origin] = [Number(process.argv[2]), process.argv[3]];
if (!port || !origin) {
  console.error('usage: baseline-undici.mjs <port> <upstream origin>');
  process.exit(2);
}
const host = new URL(origin).host;
const agent = new Agent({ connections: 128, pipelining: 1, keepAliveTimeout: 4000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

http
  .createServer((req, res) => {
    const raw = req.rawHeaders;
    const headers = [];
    for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) headers.push(raw[i], raw[i + 1]);
    headers.push('host', host);
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    let abort;
    res.on('close', () => {
      if (!res.writableFinished) abort?.(new Error('client closed'));
    });
    agent.dispatch(
      { origin, path: req.url.replace(/^\/(?:twilio|vapi)(?=\/)/, ''), method: req.method, headers, body: hasBody ? req : null },
      {
        onConnect(a) {
          abort = a;
        },
        onHeaders(status, rawHeaders, resume) {
          if (status < 200) return true;
          const out = [];
          for (let i = 0; i < rawHeaders.length; i += 2) {
            const k = rawHeaders[i].toString('latin1');
            if (!HOP.has(k.toLowerCase())) out.push(k, rawHeaders[i + 1].toString('latin1'));
          }
          res.writeHead(status, out);
          res.on('drain', resume);
          return true;
        },
        onData(chunk) {
          return res.write(chunk);
        },
        onComplete() {
          res.end();
        },
        onError(err) {
          if (res.headersSent) res.destroy();
          else {
            res.writeHead(502, { 'content-type': 'text/plain' });
            res.end(String(err.code ?? err.message));
          }
        },
      },
    );
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
// A clean exit on SIGINT/SIGTERM lets `node --cpu-prof` write its profile.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
