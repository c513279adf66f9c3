// Prints the plain closing line 'N passed, N failed, N skipped' that CI reads to count tests, after a
// line for each test that did not pass and each file that ended with an error of its own (a test
// worker that crashed leaves its unfinished tests unrun: this names the file).
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const lines: string[] = [];
    for (const module of testModules) {
      for (const error of module.errors()) lines.push(`file error: ${module.moduleId}: ${error.message}`);
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
        if (state !== 'passed') lines.push(`${state}: ${module.moduleId} > ${test.fullName}`);
      }
    }
    for (const line of lines) process.stdout.write(`${line}\n`);
    process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
