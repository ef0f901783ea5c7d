#!/usr/bin/env node
'use strict';
require('../dist/src/cli/main.js')
  .main(process.argv.slice(2))
  .catch((error) => {
    process.stderr.write(`clip-mem: ${error && error.message ? error.message : error}\n`);
    process.exitCode = process.exitCode || 1;
  });
