export interface WaitOptions {
  /** How long to keep polling (default 5000 ms). */
  timeoutMs?: number;
  /** Pause between probes (default 25 ms). */
  everyMs?: number;
  /** Stop early when this settles (a child process's exit). */
  exited?: Promise<unknown>;
}

type Falsy = undefined | null | false | 0 | '';

export function waitFor<T>(probe: () => T | Falsy | Promise<T | Falsy>, opts?: WaitOptions): Promise<Exclude<T, Falsy> | undefined>;

export function freePort(): Promise<number>;
