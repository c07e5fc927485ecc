import { onBeforeUnmount, onMounted } from 'vue'
import { onLiveEvent } from '@/api/events'
import { debounce } from '@/utils/debounce'

/**
 * Call `refresh` (debounced) when any of the live event `types` arrives, and after the stream
 * reconnects; optionally also every `pollMs` as a fallback (per-minute charts roll over without
 * events, and a proxy may drop the stream silently).
 */
export function useLiveRefresh(types, refresh, { delay = 1000, pollMs = 0, filter = null } = {}) {
  const run = debounce(() => {
    if (typeof document !== 'undefined' && document.visibilityState === 'hidden') {
      pending = true
      return
    }
    refresh()
  }, delay, { maxWait: delay * 3 })
  let pending = false
  let timer = null
  const offs = []
  const onVisible = () => {
    if (document.visibilityState === 'visible' && pending) {
      pending = false
      refresh()
    }
  }
  onMounted(() => {
    for (const type of types) {
      offs.push(onLiveEvent(type, (data) => (!filter || filter(type, data)) && run()))
    }
    offs.push(onLiveEvent('resync', () => run()))
    if (pollMs) timer = setInterval(() => run(), pollMs)
    document.addEventListener('visibilitychange', onVisible)
  })
  onBeforeUnmount(() => {
    offs.forEach((off) => off())
    run.cancel()
    clearInterval(timer)
    document.removeEventListener('visibilitychange', onVisible)
  })
  return run
}
