// `breakwater status`: the status page's summary for a terminal, read from /status.json.
import { renderText, type Summary } from './summary.js';
import { sleep } from '../resilience/clock.js';

async function fetchSummary(base: string): Promise<Summary> {
  const url = new URL('status.json', base.endsWith('/') ? base : `${base}/`);
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!r.ok) throw new Error(`${url.href} answered ${r.status}`);
  return (await r.json()) as Summary;
}

export async function statusCommand(admin: string, watch: boolean): Promise<number> {
  if (!watch) {
    try {
      process.stdout.write(renderText(await fetchSummary(admin)));
      return 0;
    } catch (err) {
      console.error(`breakwater: cannot read status from ${admin}: ${(err as Error).message}`);
      return 1;
    }
  }
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tty = process.stdout.isTTY;
  while (!stop) {
    let text: string;
    try {
      text = renderText(await fetchSummary(admin));
    } catch (err) {
      text = `breakwater: cannot read status from ${admin}: ${(err as Error).message} (retrying)\n`;
    }
    // On a terminal, redraw in place; into a pipe, one frame after another.
    process.stdout.write(tty ? `\x1b[H\x1b[2J${text}` : `${text}\n`);
    await sleep(1000);
  }
  return 0;
}
