// Preloaded into a Breakwater child process (NODE_OPTIONS=--require) by memory tests: runs a
// full GC every few milliseconds, so the process's RSS tracks memory that is actually retained
// (a buffered body) rather than garbage V8 has not yet got round to collecting.
'use strict';
const v8 = require('node:v8');
const vm = require('node:vm');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const every = Number(process.env.BW_TEST_GC_EVERY_MS || 20);
setInterval(() => gc(), every).unref();
