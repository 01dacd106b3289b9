#!/usr/bin/env node
// The benchmark's fake Twilio: small JSON answers, a 64 KiB answer, a 20 MiB streamed answer,
// and uploads it counts and discards. Everything is precomputed so the upstream costs as little
// CPU as possible (it shares a core with the load generator).
// Usage: node bench/upstream.mjs <port>
import http from 'node:http';

const port = Number(process.argv[2]);
const json = (o) => Buffer.from(JSON.stringify(o));
const SMALL = json({
  sid: 'SM' + 'a'.repeat(32),
  status: 'queued',
  to: '+15558675310',
  from: '+15017122661',
  body: 'hello from the benchmark upstream',
  num_segments: '1',
  price: null,
  uri: '/2010-04-01/Accounts/AC/Messages/SM.json',
});
const CREATED = json({
  sid: 'SM' + 'b'.repeat(32),
  account_sid: 'AC123',
  to: '+15558675310',
  from: '+15017122661',
  status: 'queued',
  direction: 'outbound-api',
  api_version: '2010-04-01',
  num_segments: '1',
  price: null,
  uri: '/2010-04-01/Accounts/AC123/Messages/SM.json',
});
// 64 KiB of JSON: a page of message resources, as a list call returns.
const item = JSON.stringify({ sid: 'SM' + 'c'.repeat(32), status: 'delivered', to: '+15558675310', from: '+15017122661', body: 'x'.repeat(120) });
let page = '{"messages":[';
while (page.length + item.length + 3 < 65536) page += (page.endsWith('[') ? '' : ',') + item;
page += ']}';
const LARGE = Buffer.from(page.padEnd(65536, ' '));
const CHUNK = Buffer.alloc(64 * 1024, 'y');

/** `…/Huge…?mib=N`: N MiB (default 20), written as the client takes it. */
function streamHuge(res, url) {
  const mib = Number(/[?&]mib=(\d+)/.exec(url)?.[1] ?? 20);
  const bytes = mib * 1024 * 1024;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes });
  let left = bytes;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

http
  .createServer((req, res) => {
    let bytes = 0;
    req.on('data', (c) => {
      bytes += c.length;
    });
    req.on('end', () => {
      const url = req.url;
      if (url.includes('/Huge')) return streamHuge(res, url);
      let body = SMALL;
      let status = 200;
      if (url.includes('/Large')) body = LARGE;
      else if (url.includes('/Upload')) body = json({ received: bytes });
      else if (req.method === 'POST') {
        body = CREATED;
        status = 201;
      }
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
