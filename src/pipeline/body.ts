// The body of an answer as a handle, not a stream: it waits, paused, until the one reply writer
// pipes it to the client, or a stage reads it into a buffer or discards it. No Readable is
// allocated per response (undici hands its attempt a `resume`, which is all the flow control
// needed), and stages that must see the bytes or the end (a store, the bulkhead, the breaker)
// add a tap instead of writing to the socket themselves.

/**
 * How a body ended. `complete`: every byte came. `broken`: the upstream cut it (a reset, the
 * exchange deadline). `client`: the app left and nobody needed the rest. `discarded`: a stage
 * dropped it unread (a retried 5xx, a 304 the cache consumed).
 */
export type BodyEnd = 'complete' | 'broken' | 'client' | 'discarded';

/** Where body bytes go: the client's ServerResponse, or a buffer. */
export interface Sink {
  /** false: stop until the sink emits 'drain'. */
  write(chunk: Buffer): boolean;
  end(): void;
  /** The body broke midway: the reader must not see a clean end. */
  destroy(): void;
  once(event: 'drain', fn: () => void): unknown;
}

/** What a body that went to a sink delivered. */
export interface Delivered {
  readonly end: BodyEnd;
  /** Bytes written to the sink. */
  readonly bytes: number;
  /** Why it broke off (an undici code, `client closed`, `send_timeout`), for the access line. */
  readonly aborted: string | undefined;
}

/** A stage's view of the bytes and the end of a body it does not own. */
export interface BodyTap {
  /** false: this tap needs no more of it (a store it outgrew), so a body read only for taps may stop. */
  data?(chunk: Buffer): boolean | void;
  end(how: BodyEnd): void;
}

export interface Body {
  /** Starts the flow into `sink` (once); `done` is called when the body is over. */
  pipe(sink: Sink, done: (d: Delivered) => void): void;
  /** Not wanted: drains it to nowhere (keeping the connection) or stops it. */
  discard(): void;
  /** Sees every chunk and the end, before the sink does. Taps run in the order added. */
  tap(t: BodyTap): void;
  /** Bytes, when known before reading (a body in memory). */
  readonly size: number | undefined;
}

/** The shared tap list, and the end reported once. */
export abstract class TappedBody {
  private taps: BodyTap[] | undefined = undefined;
  protected ended: BodyEnd | undefined = undefined;

  tap(t: BodyTap): void {
    if (this.ended !== undefined) {
      t.end(this.ended);
      return;
    }
    (this.taps ??= []).push(t);
  }

  /** Passes a chunk to the taps; false when one of them wants no more. */
  protected emitData(chunk: Buffer): boolean {
    const taps = this.taps;
    let more = true;
    if (taps !== undefined) for (let i = 0; i < taps.length; i++) if (taps[i]!.data?.(chunk) === false) more = false;
    return more;
  }

  protected emitEnd(how: BodyEnd): void {
    if (this.ended !== undefined) return;
    this.ended = how;
    const taps = this.taps;
    if (taps !== undefined) for (let i = 0; i < taps.length; i++) taps[i]!.end(how);
  }
}

/** A body held in memory: a stored answer, a stub, the buffered head of an upstream answer. */
export class BufferedBody extends TappedBody implements Body {
  constructor(private readonly buf: Buffer) {
    super();
  }

  get size(): number {
    return this.buf.length;
  }

  pipe(sink: Sink, done: (d: Delivered) => void): void {
    if (this.ended !== undefined) {
      sink.end();
      done({ end: this.ended, bytes: 0, aborted: undefined });
      return;
    }
    if (this.buf.length > 0) {
      this.emitData(this.buf);
      sink.write(this.buf);
    }
    sink.end();
    this.emitEnd('complete');
    done({ end: 'complete', bytes: this.buf.length, aborted: undefined });
  }

  discard(): void {
    if (this.buf.length > 0 && this.ended === undefined) this.emitData(this.buf);
    this.emitEnd('complete');
  }
}

export const EMPTY = Buffer.alloc(0);

/** A sink that keeps at most `max` bytes: the rest is read and dropped. */
class Collect implements Sink {
  chunks: Buffer[] = [];
  bytes = 0;
  constructor(private readonly max: number) {}
  write(chunk: Buffer): boolean {
    if (this.bytes + chunk.length <= this.max) {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
    }
    return true;
  }
  end(): void {}
  destroy(): void {}
  once(): this {
    return this;
  }
}

/**
 * Reads a body into memory, keeping its first `max` bytes (an error answer's head is what a
 * decision needs). Resolves with the bytes kept and how the body ended.
 */
export function readBody(body: Body, max: number): Promise<{ buf: Buffer; end: BodyEnd }> {
  const sink = new Collect(max);
  return new Promise((resolve) => body.pipe(sink, (d) => resolve({ buf: Buffer.concat(sink.chunks, sink.bytes), end: d.end })));
}
