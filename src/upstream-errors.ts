// The provider's own error code of a failed upstream answer, as a bounded metric label and an
// access-line field. Only the head of a non-2xx JSON body is read (forward.ts keeps at most
// ERROR_HEAD_LIMIT bytes of it); the message text itself is never kept, as it can quote a phone
// number or a name.
//   Twilio: {"code": 21211, "message": "...", "more_info": "...", "status": 400} -> "21211"
//   Vapi:   {"message": [...] | "...", "error": "Bad Request", "statusCode": 400} -> "bad_request"
//           (the HTTP reason phrase it sends in `error`, from a fixed list; an array message is
//           a request validation failure: "validation")
// Anything else is "other"; an unparsable body is "unparsed".

/** Bytes of a non-2xx body kept for classification; provider error bodies are a few hundred. */
export const ERROR_HEAD_LIMIT = 2048;
/** Distinct codes kept per upstream before new ones count as "other" (cardinality bound). */
export const MAX_CODES_PER_UPSTREAM = 50;

const REASONS = new Set([
  'bad request',
  'unauthorized',
  'payment required',
  'forbidden',
  'not found',
  'method not allowed',
  'conflict',
  'gone',
  'payload too large',
  'unprocessable entity',
  'too many requests',
  'internal server error',
  'bad gateway',
  'service unavailable',
  'gateway timeout',
]);

export function classifyUpstreamError(head: Buffer | undefined): string | undefined {
  if (head === undefined || head.length === 0) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(head.toString('utf8'));
  } catch {
    return 'unparsed';
  }
  if (body === null || typeof body !== 'object') return 'other';
  const b = body as Record<string, unknown>;
  if (typeof b.code === 'number' && Number.isInteger(b.code) && b.code > 0 && b.code < 100_000) return String(b.code);
  if (Array.isArray(b.message)) return 'validation';
  if (typeof b.error === 'string') {
    const reason = b.error.toLowerCase();
    if (REASONS.has(reason)) return reason.replaceAll(' ', '_');
  }
  return 'other';
}

/** Keeps the label set of one upstream bounded: the first MAX_CODES_PER_UPSTREAM codes, then "other". */
export class CodeBound {
  private readonly seen = new Map<string, Set<string>>();
  bound(upstream: string, code: string): string {
    let s = this.seen.get(upstream);
    if (!s) this.seen.set(upstream, (s = new Set()));
    if (s.has(code)) return code;
    if (s.size >= MAX_CODES_PER_UPSTREAM) return 'other';
    s.add(code);
    return code;
  }
}
