// Test policies derived from the shipped default: parse config/policy.yaml (its `${VAR}`
// placeholders stay as text), change what the test is about, print it back as YAML.
import YAML from 'yaml';
import { DEFAULT_POLICY } from './proxy.js';

/** The default policy with `change` applied to its parsed form. */
export function policyWith(change: (p: any) => void): string {
  const p = YAML.parse(DEFAULT_POLICY) as any;
  change(p);
  return YAML.stringify(p);
}

/** Form-encodes a Twilio-style body. */
export function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

export const FORM = { 'content-type': 'application/x-www-form-urlencoded' } as const;
export const JSON_TYPE = { 'content-type': 'application/json' } as const;

/** A Twilio Account SID-shaped id ending in `tail`. */
export function accountSid(tail: string): string {
  return `AC${tail.padStart(32, '0')}`;
}
