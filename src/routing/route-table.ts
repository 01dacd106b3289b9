// Method + path patterns matched through a segment trie, so the cost of a match depends on the
// path's depth, not on how many routes the policy declares (500 routes cost what 2 do).
// Pattern syntax: `POST /2010-04-01/Accounts/*/Messages.json`; a segment may be a literal,
// `*` or `{name}` (one segment, named for templates), a glob inside a segment such as
// `{MessageSid}.json` or `*.json`, or a final `**` (the rest of the path, possibly empty).

export interface RouteMatch<T> {
  value: T;
  params: Record<string, string>;
}

interface Leaf<T> {
  byMethod: Map<string, T>;
  any: T | undefined;
}

interface PatternChild<T> {
  re: RegExp;
  names: string[];
  /** A bare `*`: any non-empty segment, no regex needed. */
  anySegment: boolean;
  node: TrieNode<T>;
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

function segmentRegex(seg: string): { re: RegExp; names: string[]; anySegment: boolean } | undefined {
  if (!seg.includes('*') && !seg.includes('{')) return undefined;
  const names: string[] = [];
  let src = '';
  for (const part of seg.split(/(\{[A-Za-z_][A-Za-z0-9_]*\}|\*)/)) {
    if (part === '*') src += '[^/]+';
    else if (part.startsWith('{') && part.endsWith('}')) {
      names.push(part.slice(1, -1));
      src += '([^/]+)';
    } else src += part.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return { re: new RegExp(`^${src}$`), names, anySegment: seg === '*' };
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
      const glob = segmentRegex(seg);
      if (glob) {
        let child = node.patterns.find((p) => p.re.source === glob.re.source && p.names.join() === glob.names.join());
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
    return walk(this.root, method, path, 1, undefined);
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
    if (p.names.length === 0) {
      // Nothing to capture: a test, or for a bare `*` not even that (a segment holds no '/').
      if (p.anySegment ? seg.length === 0 : !p.re.test(seg)) continue;
    } else {
      const mm = p.re.exec(seg);
      if (!mm) continue;
      next = { ...params };
      for (let i = 0; i < p.names.length; i++) next[p.names[i]!] = decodeSafe(mm[i + 1]!);
    }
    const m = walk(p.node, method, path, end + 1, next);
    if (m) return m;
  }
  const rest = fromLeaf(node.rest, method);
  return rest === undefined ? undefined : { value: rest, params: params ?? NO_PARAMS };
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
