// `server.watch`: reload when the policy file changes. Watching the file itself (an inotify watch
// on its inode) goes deaf after the first save-by-rename: editors, `sed -i` and `mv new
// policy.yaml` put a new inode in place, and a Kubernetes ConfigMap update swaps the `..data`
// symlink the file resolves through, so the watched inode is never written again. So the
// directory is watched (what Envoy's `watched_directory` and kubelet-aware tools do), events are
// filtered by the file's name and `..data`, the path is resolved afresh on each event, and the
// content is compared with what was last seen, so a burst of events is one reload. A slow poll
// backs the watch up for the cases inotify cannot see (the directory itself replaced).
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

export interface PolicyWatchEvents {
  /** The file's content differs from what was last seen: reload it. */
  changed(): void;
  /** The file cannot be read (absent mid-swap, say): the running policy stays. Once per absence. */
  missing(reason: string): void;
}

export interface PolicyWatch {
  close(): void;
}

export interface PolicyWatchOptions {
  debounceMs?: number;
  pollMs?: number;
}

/** Kubernetes projects ConfigMap keys as `name -> ..data/name`, `..data -> ..<timestamp>`. */
const CONFIGMAP_LINK = '..data';

export function watchPolicyFile(path: string, events: PolicyWatchEvents, opts: PolicyWatchOptions = {}): PolicyWatch {
  const debounceMs = opts.debounceMs ?? 200;
  const pollMs = opts.pollMs ?? 5000;
  const dir = dirname(path);
  const name = basename(path);
  let last = digest(path);
  let missing = last === undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  let dirWatch: { w: FSWatcher; ino: number } | undefined;
  // A policy that is a symlink to a file elsewhere (not a ConfigMap): that directory too.
  let targetWatch: { w: FSWatcher; dir: string; name: string } | undefined;

  const schedule = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  function open(at: string, relevant: (file: string | null) => boolean): FSWatcher | undefined {
    try {
      const w = watch(at, { persistent: false }, (_event, file) => {
        if (relevant(file)) schedule();
      });
      // The directory went away (or inotify gave up): forget the watch; the poll re-arms it.
      w.on('error', () => {
        w.close();
        if (dirWatch?.w === w) dirWatch = undefined;
        if (targetWatch?.w === w) targetWatch = undefined;
        schedule();
      });
      return w;
    } catch {
      return undefined;
    }
  }

  function arm(): void {
    const ino = inode(dir);
    if (dirWatch !== undefined && dirWatch.ino !== ino) {
      dirWatch.w.close();
      dirWatch = undefined;
    }
    if (dirWatch === undefined && ino !== undefined) {
      const w = open(dir, (file) => file === null || file === name || file === CONFIGMAP_LINK);
      if (w !== undefined) dirWatch = { w, ino };
    }
    let real: string | undefined;
    try {
      real = realpathSync(path);
    } catch {
      real = undefined;
    }
    const realDir = real === undefined ? undefined : dirname(real);
    // Inside the watched directory (a ConfigMap's `..<timestamp>/`) the `..data` swap is seen
    // there already; the target's own directory is removed after each swap.
    const elsewhere = realDir !== undefined && realDir !== dir && dirname(realDir) !== dir ? realDir : undefined;
    if (targetWatch !== undefined && (targetWatch.dir !== elsewhere || targetWatch.name !== basename(real ?? ''))) {
      targetWatch.w.close();
      targetWatch = undefined;
    }
    if (targetWatch === undefined && elsewhere !== undefined) {
      const target = basename(real!);
      const w = open(elsewhere, (file) => file === null || file === target);
      if (w !== undefined) targetWatch = { w, dir: elsewhere, name: target };
    }
  }

  function check(): void {
    if (closed) return;
    arm();
    const now = digest(path);
    if (now === undefined) {
      if (!missing) {
        missing = true;
        events.missing(`cannot read ${path}`);
      }
      return;
    }
    missing = false;
    if (now === last) return;
    last = now;
    events.changed();
  }

  arm();
  const poll = setInterval(check, pollMs);
  poll.unref();

  return {
    close() {
      closed = true;
      clearTimeout(timer);
      clearInterval(poll);
      dirWatch?.w.close();
      targetWatch?.w.close();
    },
  };
}

/** The file's content hash, following symlinks afresh; undefined when it cannot be read. */
function digest(path: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('base64');
  } catch {
    return undefined;
  }
}

function inode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}
