#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so `dts` works from an installed checkout without a build step.
require('tsx/cjs');
require('../client/cli').main(process.argv).then((code) => process.exit(code));
