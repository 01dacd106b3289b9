#!/usr/bin/env node
// The reference the acceptance check and issue 7 measure against: plain node-http-proxy with a
// keep-alive agent, stripping the /twilio and /vapi prefixes the way Breakwater routes them.
// Usage: node bench/baseline-http-proxy.mjs <listenPort> <upstreamOrigin>
import http from 'node:http';
import httpProxy from 'http-proxy';

const [port, target] = [Number(process.argv[2]), process.argv[3]];
if (!port || !target) {
  console.error('usage: baseline-http-proxy.mjs <port> <upstream origin>');
  process.exit(2);
}
const proxy = httpProxy.createProxyServer({ target, agent: new http.Agent({ keepAlive: true, maxSockets: 256 }) });
proxy.on('error', (_err, _req, res) => {
  if (res.headersSent) res.destroy();
  else {
    res.writeHead(502);
    res.end();
  }
});
http
  .createServer((req, res) => {
    req.url = req.url.replace(/^\/(?:twilio|vapi)(?=\/)/, '');
    proxy.web(req, res);
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
// A clean exit on SIGINT/SIGTERM lets `node --cpu-prof` write its profile.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
