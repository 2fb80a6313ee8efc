#!/usr/bin/env node
// `dts` (also `pg-dts`, so `npx pg-dts` never resolves the unrelated `dts` package). An installed
// package runs the compiled JavaScript in lib/ (`npm pack` builds it); a checkout, which has the
// TypeScript sources, runs them through tsx (a dev dependency) so edits need no build step.
const { existsSync } = require('node:fs');
const path = require('node:path');

const fromSource = existsSync(path.join(__dirname, '..', 'client', 'cli.ts'));
if (fromSource) require('tsx/cjs');
const cli = fromSource ? require('../client/cli') : require('../lib/client/cli');
cli.runCli(process.argv);
