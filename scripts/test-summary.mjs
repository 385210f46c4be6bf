#!/usr/bin/env node
// Prints one plain closing line from vitest's JSON report, e.g.
//   vitest: 412 passed, 0 failed, 3 skipped
// so anything reading the log finds the totals without parsing vitest's own layout.
import { existsSync, readFileSync } from 'node:fs';

const file = process.argv[2];
if (file === undefined || !existsSync(file)) {
  console.log('vitest: no JSON report was written (see the output above)');
  process.exit(0);
}

const report = JSON.parse(readFileSync(file, 'utf8'));
const passed = report.numPassedTests ?? 0;
const failed = report.numFailedTests ?? 0;
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
console.log(`vitest: ${passed} passed, ${failed} failed, ${skipped} skipped`);
