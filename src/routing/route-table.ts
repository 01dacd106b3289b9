// Method + path patterns matched through a segment trie, so the cost of a match depends on the
// path's depth, not on how many routes the policy declares (500 routes cost what 2 do).
// Pattern syntax: `POST /2010-04-01/Accounts/*/Messages.json`; a segment may be a literal,
// `*` or `{name}` (one segment, named for templates), a glob inside a segment such as
// `{MessageSid}.json` or `*.json`, or a final `**` (the rest of the path, possibly empty).
// Globs in a segment are matched without backtracking: the literal prefix and suffix are tested,
// then each literal between globs is found at its leftmost place (leftmost is the placement that
// leaves most room, so no other is ever tried): a regular expression would backtrack, and one long
// segment could hold the event loop (docs/reliability.md, second hardening pass). Two globs
// side by side (`{a}{b}`) have no literal to split them and are refused at load.

export interface RouteMatch<T> {
  value: T;
  params: Record<string, string>;
}

interface Leaf<T> {
  byMethod: Map<string, T>;
  any: T | undefined;
}

interface PatternChild<T> extends Glob {
  node: TrieNode<T>;
}

/** One glob segment: literal pieces around k globs (k + 1 pieces; the first and last may be empty). */
interface Glob {
  pieces: string[];
  /** Per glob: the `{name}` captured, undefined for `*`. */
  names: (string | undefined)[];
  /** Some glob is named. */
  captures: boolean;
  key: string;
}

interface TrieNode<T> {
  literal: Map<string, TrieNode<T>>;
  patterns: PatternChild<T>[];
  leaf: Leaf<T> | undefined;
  /** Routes ending in `**` below this node. */
  rest: Leaf<T> | undefined;
}

const newNode = <T>(): TrieNode<T> => ({ literal: new Map(), patterns: [], leaf: undefined, rest: undefined });
const NO_PARAMS: Record<string, string> = Object.freeze({}) as Record<string, string>;

export function parsePattern(pattern: string): { method: string; segments: string[] } {
  const sp = pattern.indexOf(' ');
  const method = sp > 0 ? pattern.slice(0, sp) : '*';
  const path = sp > 0 ? pattern.slice(sp + 1) : pattern;
  return { method, segments: path.split('/').slice(1) };
}

/** Why a pattern cannot be matched without backtracking, or undefined when it can. */
export function patternProblem(pattern: string): string | undefined {
  const { segments } = parsePattern(pattern);
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    // `**` is the rest of the path; anywhere else the schema refuses it on its own.
    if (seg.includes('**')) continue;
    const g = segmentGlob(seg);
    if (g && g.pieces.slice(1, -1).some((piece) => piece === '')) return `segment "${seg}" has two globs side by side: put a literal between them`;
  }
  return undefined;
}

function segmentGlob(seg: string): Glob | undefined {
  const parts = seg.split(/(\{[A-Za-z_][A-Za-z0-9_]*\}|\*)/);
  if (parts.length === 1) return undefined;
  const pieces: string[] = [];
  const names: (string | undefined)[] = [];
  for (let i = 0; i < parts.length; i++) {
    if (i % 2 === 0) pieces.push(parts[i]!);
    else names.push(parts[i] === '*' ? undefined : parts[i]!.slice(1, -1));
  }
  return { pieces, names, captures: names.some((n) => n !== undefined), key: JSON.stringify([pieces, names]) };
}

/**
 * Where each glob of `g` starts and ends in `seg` (flat pairs), or undefined when it does not
 * match. Each glob takes at least one character. Linear in the segment for the literals policies
 * use; never exponential.
 */
function matchGlob(g: Glob, seg: string): number[] | undefined {
  const pieces = g.pieces;
  const k = pieces.length - 1;
  const first = pieces[0]!;
  const last = pieces[k]!;
  const end = seg.length - last.length;
  if (end - first.length < k || !seg.startsWith(first) || !seg.endsWith(last)) return undefined;
  const spans: number[] = [];
  let pos = first.length;
  for (let i = 1; i < k; i++) {
    const lit = pieces[i]!;
    const at = seg.indexOf(lit, pos + 1);
    if (at < 0 || at + lit.length > end - (k - i)) return undefined;
    spans.push(pos, at);
    pos = at + lit.length;
  }
  if (end - pos < 1) return undefined;
  spans.push(pos, end);
  return spans;
}

export class RouteTable<T> {
  private readonly root: TrieNode<T> = newNode();
  size = 0;

  add(pattern: string, value: T): void {
    const { method, segments } = parsePattern(pattern);
    let node = this.root;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!;
      if (seg === '**' && i === segments.length - 1) {
        node.rest ??= { byMethod: new Map(), any: undefined };
        setLeaf(node.rest, method, value);
        this.size++;
        return;
      }
      const glob = segmentGlob(seg);
      if (glob) {
        const problem = patternProblem(`/${seg}`);
        if (problem !== undefined) throw new Error(problem);
        let child = node.patterns.find((p) => p.key === glob.key);
        if (!child) {
          child = { ...glob, node: newNode() };
          node.patterns.push(child);
        }
        node = child.node;
      } else {
        let next = node.literal.get(seg);
        if (!next) {
          next = newNode();
          node.literal.set(seg, next);
        }
        node = next;
      }
    }
    node.leaf ??= { byMethod: new Map(), any: undefined };
    setLeaf(node.leaf, method, value);
    this.size++;
  }

  /** `path` is the path without query, starting with `/`. */
  match(method: string, path: string): RouteMatch<T> | undefined {
    if (this.size === 0) return undefined;
    return walk(this.root, method, normalisePath(path), 1, undefined);
  }
}

function setLeaf<T>(leaf: Leaf<T>, method: string, value: T): void {
  if (method === '*') leaf.any ??= value;
  else if (!leaf.byMethod.has(method)) leaf.byMethod.set(method, value);
}

function fromLeaf<T>(leaf: Leaf<T> | undefined, method: string): T | undefined {
  if (leaf === undefined) return undefined;
  return leaf.byMethod.get(method) ?? leaf.any;
}

function walk<T>(node: TrieNode<T>, method: string, path: string, from: number, params: Record<string, string> | undefined): RouteMatch<T> | undefined {
  if (from > path.length) {
    const v = fromLeaf(node.leaf, method) ?? fromLeaf(node.rest, method);
    return v === undefined ? undefined : { value: v, params: params ?? NO_PARAMS };
  }
  let end = path.indexOf('/', from);
  if (end < 0) end = path.length;
  const seg = path.slice(from, end);
  const lit = node.literal.get(seg);
  if (lit) {
    const m = walk(lit, method, path, end + 1, params);
    if (m) return m;
  }
  for (const p of node.patterns) {
    let next = params;
    // A bare `*` is any non-empty segment (a segment holds no '/'): no matching needed.
    if (p.pieces.length === 2 && p.pieces[0] === '' && p.pieces[1] === '' && !p.captures) {
      if (seg.length === 0) continue;
    } else {
      const spans = matchGlob(p, seg);
      if (spans === undefined) continue;
      if (p.captures) {
        next = { ...params };
        for (let i = 0; i < p.names.length; i++) {
          const name = p.names[i];
          if (name !== undefined) next[name] = decodeSafe(seg.slice(spans[2 * i]!, spans[2 * i + 1]!));
        }
      }
    }
    const m = walk(p.node, method, path, end + 1, next);
    if (m) return m;
  }
  const rest = fromLeaf(node.rest, method);
  return rest === undefined ? undefined : { value: rest, params: params ?? NO_PARAMS };
}

const decodeEscape = (e: string): string => String.fromCharCode(parseInt(e.slice(1), 16));
const MALFORMED_ESCAPE = /%(?![0-9A-Fa-f]{2})/;
const UNRESERVED_ESCAPE = /%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[Dd]|2[Ee]|5[Ff]|7[Ee])/g;

/**
 * The spelling route patterns are matched against: escapes of unreserved characters decoded
 * (RFC 3986 §6.2.2.2: `%4D` is `M`), empty segments (`//`) and a trailing `/` dropped. Otherwise
 * `/Accounts/AC1/%4Dessages.json` or `/Accounts//AC1/Messages.json/` would reach the upstream,
 * which reads them as the same resource, past a route-scoped limit such as the per-recipient
 * cap. What is forwarded is unchanged; only matching sees this form. Most paths need none of it.
 */
export function normalisePath(path: string): string {
  const last = path.length - 1;
  if (!path.includes('%') && !path.includes('//') && (last === 0 || path.charCodeAt(last) !== 47)) return path;
  // A segment with a malformed escape is left spelled as it is: decoding around it would change
  // what its param decodes to (a lone `%` next to `%30` would become an escape of its own).
  let p = path.includes('%')
    ? path
        .split('/')
        .map((seg) => (seg.includes('%') && !MALFORMED_ESCAPE.test(seg) ? seg.replace(UNRESERVED_ESCAPE, decodeEscape) : seg))
        .join('/')
    : path;
  p = p.replace(/\/{2,}/g, '/');
  if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  return p;
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
