// Ends the Vitest output with one plain line, "vitest: N passed, N failed[, N skipped]", that CI
// logs and other tools can read without knowing Vitest's own summary format.
export default class SummaryReporter {
  onTestRunEnd(testModules = []) {
    const counts = { passed: 0, failed: 0, skipped: 0 }
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result()?.state
        if (state === 'passed') counts.passed++
        else if (state === 'failed') counts.failed++
        else counts.skipped++
      }
      if (mod.state?.() === 'failed' && !mod.children.size) counts.failed++ // a file that did not load
    }
    const skipped = counts.skipped ? `, ${counts.skipped} skipped` : ''
    process.stdout.write(`vitest: ${counts.passed} passed, ${counts.failed} failed${skipped}\n`)
  }
}
