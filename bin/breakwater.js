#!/usr/bin/env node
// Thin launcher: the CLI lives in the compiled tree so `npm ci` (which runs `prepare`) leaves it runnable.
import { main } from '../dist/cli.js';

main(process.argv).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
);
