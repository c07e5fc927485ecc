/**
 * Trailing debounce. With `maxWait`, a steady stream of calls (e.g. live events during a busy
 * ingest) still runs `fn` at least every `maxWait` ms instead of postponing it forever.
 */
export function debounce(fn, wait, { maxWait = 0 } = {}) {
  let timer = null
  let firstCall = 0
  const run = (args) => {
    clearTimeout(timer)
    timer = null
    firstCall = 0
    fn(...args)
  }
  const debounced = (...args) => {
    const now = Date.now()
    if (!firstCall) firstCall = now
    clearTimeout(timer)
    const remaining = maxWait ? Math.min(wait, firstCall + maxWait - now) : wait
    timer = setTimeout(() => run(args), Math.max(0, remaining))
  }
  debounced.cancel = () => {
    clearTimeout(timer)
    timer = null
    firstCall = 0
  }
  return debounced
}
