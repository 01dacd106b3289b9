/** File (relative to src/) → the src files it imports, relative to src/. */
export function importGraph(): Map<string, string[]>;
/** Every broken layering rule, one line each; empty when all hold. */
export function violations(graph?: Map<string, string[]>): string[];
