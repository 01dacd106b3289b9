// The status page (GET / on the admin listener): rendered here with the current state so it
// reads without JavaScript, then kept live by a small inline script polling /status.json once
// a second. No framework, no external assets; the CSP nonce is per response.
import type { BreakerView, Summary } from './summary.js';

const esc = (v: unknown) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const LABEL: Record<BreakerView['state'], string> = { closed: 'Closed', open: 'Open', half_open: 'Half-open' };

function breakerHtml(b: BreakerView): string {
  const wait =
    b.openForMs === null
      ? b.forced
        ? 'Forced open: stays open until closed or reset'
        : b.state === 'half_open'
          ? 'Probing the upstream'
          : 'Traffic flows'
      : `Half-open probe in ${Math.ceil(b.openForMs / 1000)} s`;
  return `<article class="card ${esc(b.state)}" data-upstream="${esc(b.upstream)}" aria-label="breaker ${esc(b.upstream)}">
<h3>${esc(b.upstream)} <span class="state" data-field="state">${esc(LABEL[b.state])}${b.forced ? ' (forced)' : ''}${b.enforcing ? '' : ' (shadow)'}</span></h3>
<p class="wait" data-field="wait" aria-live="polite">${esc(wait)}</p>
<dl><dt>Consecutive failures</dt><dd data-field="consecutive">${esc(b.consecutiveFailures ?? '-')}</dd>
<dt>Failures</dt><dd data-field="failures">${esc(b.failures)}</dd>
<dt>Trips</dt><dd data-field="trips">${esc(b.trips)}</dd>
<dt>Rejected</dt><dd data-field="rejections">${esc(b.rejections)}</dd>
<dt>429 holds</dt><dd data-field="holds">${esc(b.holdsActive)}${b.holdLeftMs === null ? '' : ` (${Math.ceil(b.holdLeftMs / 1000)} s left)`}</dd>
<dt>In flight</dt><dd data-field="inflight">${esc(b.inFlight)}</dd></dl>
<div class="actions"><button type="button" data-action="open">Force open</button><button type="button" data-action="close">Force close</button><button type="button" data-action="reset">Reset</button></div>
</article>`;
}

function metaText(s: Summary): string {
  const reload = s.lastReload ? ` · last reload ${s.lastReload.ok ? 'ok' : 'refused'} ${s.lastReload.at.slice(11, 19)}` : '';
  return `v${s.version} · policy ${s.policyVersion} · store ${s.store}${s.storeFallback ? ' (fallback: local buckets)' : ''} · ${s.ready ? 'ready' : 'draining'}${s.stubMode ? ' · stub mode' : ''}${reload}`;
}

const cell = (v: unknown) => `<td>${esc(v ?? '-')}</td>`;

function trafficRows(s: Summary | undefined): string {
  if (!s || s.traffic.length === 0) return '<tr><td colspan="8">No requests in the last minute</td></tr>';
  return s.traffic
    .map(
      (t) =>
        `<tr>${cell(t.upstream)}${cell(t.route)}${cell(t.perSecond)}${cell(`${t.errorPct}%`)}${cell(t.p50Ms === null ? null : `${t.p50Ms} ms`)}${cell(t.p99Ms === null ? null : `${t.p99Ms} ms`)}${cell(t.rateLimited)}${cell(t.replays)}${cell(t.cacheHits)}</tr>`,
    )
    .join('');
}

function destinationRows(s: Summary | undefined): string {
  if (!s || s.destinations.length === 0) return '<tr><td colspan="6">No host-routed destination in use</td></tr>';
  return s.destinations
    .map(
      (d) =>
        `<tr>${cell(d.upstream)}${cell(d.scope)}${cell(LABEL[d.state] + (d.forced ? ' (forced)' : ''))}${cell(d.openForMs === null ? null : `${Math.ceil(d.openForMs / 1000)} s`)}${cell(d.consecutiveFailures ?? d.failures)}${cell(d.trips)}</tr>`,
    )
    .join('');
}

function errorRows(s: Summary | undefined): string {
  if (!s || s.recentErrors.length === 0) return '<tr><td colspan="6">None since start</td></tr>';
  return s.recentErrors
    .map(
      (e) =>
        `<tr>${cell(e.at.slice(11, 19))}${cell(e.requestId)}${cell(e.code)}${cell(`${e.method} ${e.upstream}/${e.route}`)}${cell(e.status)}${cell(e.cause)}</tr>`,
    )
    .join('');
}

const STYLE = `
:root{--ok:#1f7a3a;--bad:#b3261e;--warn:#8a5a00;--bg:#f6f7f9;--fg:#1b1f24;--muted:#5b6470;--card:#fff}
@media (prefers-color-scheme:dark){:root{--ok:#4cc27a;--bad:#ff7b72;--warn:#e3b341;--bg:#0d1117;--fg:#e6edf3;--muted:#9aa4b2;--card:#161b22}}
*{box-sizing:border-box}body{margin:0;font:15px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:12px 16px;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:baseline;border-bottom:1px solid #8883}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:20px 16px 8px}.meta{color:var(--muted);font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px;padding:0 16px}
.card{background:var(--card);border-radius:8px;padding:12px;border-left:8px solid var(--ok);box-shadow:0 1px 2px #0002}
.card.open{border-left-color:var(--bad)}.card.half_open{border-left-color:var(--warn)}
.card h3{margin:0 0 4px;font-size:17px;display:flex;justify-content:space-between;gap:8px}
.state{font-size:14px;padding:1px 8px;border-radius:99px;color:#fff;background:var(--ok)}
.open .state{background:var(--bad)}.half_open .state{background:var(--warn)}
.wait{margin:4px 0 8px;font-weight:600}.open .wait{color:var(--bad)}
dl{display:grid;grid-template-columns:auto auto;gap:2px 12px;margin:0 0 8px;font-size:14px}dt{color:var(--muted)}dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
.actions{display:flex;flex-wrap:wrap;gap:6px}button{font:inherit;padding:6px 10px;border-radius:6px;border:1px solid #8886;background:transparent;color:inherit;cursor:pointer;min-height:36px}
button:focus-visible{outline:3px solid #2f81f7;outline-offset:2px}
.scroll{overflow-x:auto;margin:0 16px}table{border-collapse:collapse;width:100%;font-size:13px;background:var(--card)}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #8883;white-space:nowrap;font-variant-numeric:tabular-nums}
#notice{margin:8px 16px;min-height:1.4em;color:var(--muted)}footer{padding:16px;color:var(--muted);font-size:12px}
`;

/** The page; `s` is undefined only when the listener was built without a status recorder. */
export function renderPage(s: Summary | undefined, nonce: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Breakwater status</title><link rel="icon" href="data:,"><style nonce="${nonce}">${STYLE}</style></head>
<body>
<header><h1>Breakwater</h1><span class="meta" id="meta">${s ? esc(metaText(s)) : ''}</span><span class="meta" id="updated" aria-live="off"></span></header>
<main>
<h2 id="breakers-h">Circuit breakers</h2>
<section class="cards" id="breakers" aria-labelledby="breakers-h">${s ? s.breakers.map(breakerHtml).join('') : ''}</section>
<p id="notice" role="status"></p>
<h2 id="destinations-h">Host-routed destinations</h2>
<div class="scroll"><table aria-labelledby="destinations-h"><thead><tr><th>Upstream</th><th>Host</th><th>State</th><th>Half-open in</th><th>Failures</th><th>Trips</th></tr></thead><tbody id="destinations">${destinationRows(s)}</tbody></table></div>
<h2 id="traffic-h">Last minute</h2>
<div class="scroll"><table aria-labelledby="traffic-h"><thead><tr><th>Upstream</th><th>Route</th><th>Req/s</th><th>Errors</th><th>p50</th><th>p99</th><th>Rate-limited</th><th>Replays</th><th>Cache hits</th></tr></thead><tbody id="traffic">${trafficRows(s)}</tbody></table></div>
<h2 id="errors-h">Recent proxy-made errors</h2>
<div class="scroll"><table aria-labelledby="errors-h"><thead><tr><th>Time (UTC)</th><th>Request id</th><th>Code</th><th>Route</th><th>Status</th><th>Cause</th></tr></thead><tbody id="errors">${errorRows(s)}</tbody></table></div>
</main>
<footer>Updates every second from /status.json. Actions are sent with the X-Breakwater-Admin header.</footer>
<script nonce="${nonce}">${SCRIPT}</script>
</body></html>`;
}

// Kept as plain ES2020 in a string: it runs in the browser, never in Node.
const SCRIPT = `
(function(){
'use strict';
var LABEL={closed:'Closed',open:'Open',half_open:'Half-open'};
var last=null,fetchedAt=0,failing=false;
function el(tag,text,cls){var e=document.createElement(tag);if(text!=null)e.textContent=String(text);if(cls)e.className=cls;return e;}
function waitText(b,elapsed){
  if(b.openForMs==null)return b.forced?'Forced open: stays open until closed or reset':b.state==='half_open'?'Probing the upstream':'Traffic flows';
  return 'Half-open probe in '+Math.max(0,Math.ceil((b.openForMs-elapsed)/1000))+' s';
}
function card(b){
  var a=document.querySelector('article[data-upstream="'+CSS.escape(b.upstream)+'"]');
  if(!a)return;
  a.className='card '+b.state;
  a.querySelector('[data-field=state]').textContent=LABEL[b.state]+(b.forced?' (forced)':'')+(b.enforcing?'':' (shadow)');
  var f={consecutive:b.consecutiveFailures==null?'-':b.consecutiveFailures,failures:b.failures,trips:b.trips,rejections:b.rejections,holds:b.holdsActive+(b.holdLeftMs==null?'':' ('+Math.ceil(b.holdLeftMs/1000)+' s left)'),inflight:b.inFlight};
  for(var k in f)a.querySelector('[data-field='+k+']').textContent=String(f[k]);
}
function rows(id,list,cols,empty,n){
  var tb=document.getElementById(id);tb.textContent='';
  if(list.length===0){var tr=el('tr');var td=el('td',empty);td.colSpan=n;tr.appendChild(td);tb.appendChild(tr);return;}
  list.forEach(function(x){var tr=el('tr');cols(x).forEach(function(v){tr.appendChild(el('td',v==null?'-':v));});tb.appendChild(tr);});
}
function render(s){
  var rl=s.lastReload?' · last reload '+(s.lastReload.ok?'ok':'refused')+' '+s.lastReload.at.slice(11,19):'';
  document.getElementById('meta').textContent='v'+s.version+' · policy '+s.policyVersion+' · store '+s.store+(s.storeFallback?' (fallback: local buckets)':'')+' · '+(s.ready?'ready':'draining')+(s.stubMode?' · stub mode':'')+rl;
  s.breakers.forEach(card);
  rows('destinations',s.destinations,function(d){return [d.upstream,d.scope,LABEL[d.state]+(d.forced?' (forced)':''),d.openForMs==null?null:Math.ceil(d.openForMs/1000)+' s',d.consecutiveFailures==null?d.failures:d.consecutiveFailures,d.trips];},'No host-routed destination in use',6);
  rows('traffic',s.traffic,function(t){return [t.upstream,t.route,t.perSecond,t.errorPct+'%',t.p50Ms==null?null:t.p50Ms+' ms',t.p99Ms==null?null:t.p99Ms+' ms',t.rateLimited,t.replays,t.cacheHits];},'No requests in the last minute',9);
  rows('errors',s.recentErrors,function(e){return [e.at.slice(11,19),e.requestId,e.code,e.method+' '+e.upstream+'/'+e.route,e.status,e.cause];},'None since start',6);
}
function tick(){
  if(!last)return;
  var elapsed=performance.now()-fetchedAt;
  last.breakers.forEach(function(b){
    var a=document.querySelector('article[data-upstream="'+CSS.escape(b.upstream)+'"] [data-field=wait]');
    if(a)a.textContent=waitText(b,elapsed);
  });
  document.getElementById('updated').textContent=failing?'Cannot reach Breakwater; retrying':'updated '+Math.round(elapsed/100)/10+' s ago';
}
function poll(){
  fetch('status.json',{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.json();}).then(function(s){
    last=s;fetchedAt=performance.now();failing=false;render(s);tick();
  }).catch(function(){failing=true;tick();});
}
document.getElementById('breakers').addEventListener('click',function(ev){
  var btn=ev.target.closest('button[data-action]');if(!btn)return;
  var up=btn.closest('article').getAttribute('data-upstream'),act=btn.getAttribute('data-action');
  var what={open:'Force the '+up+' breaker OPEN? Every request to '+up+' will be refused with circuit_open until it is closed or reset.',close:'Force the '+up+' breaker CLOSED? Traffic flows to '+up+' again.',reset:'Reset the '+up+' breaker? It closes and its counts are cleared.'}[act];
  if(!window.confirm(what))return;
  var note=document.getElementById('notice');
  fetch('breakers/'+encodeURIComponent(up)+'/'+act,{method:'POST',headers:{'X-Breakwater-Admin':'1'}}).then(function(r){
    note.textContent=r.ok?(up+': '+act+' done'):(up+': '+act+' refused ('+r.status+')');poll();
  }).catch(function(){note.textContent=up+': '+act+' failed to send';});
});
setInterval(poll,1000);setInterval(tick,250);poll();
})();
`;
