// The live event stream (Server-Sent Events). EventSource cannot send headers, so the access token
// goes in the query string; it is fetched fresh before every (re)connection. On error the stream is
// closed and reopened with exponential backoff; listeners get a 'resync' event after a reconnect so
// they can reload whatever they may have missed.
import { ref } from 'vue'

export const EVENTS_URL = '/api/v1/events'
export const EVENT_TYPES = ['ingest', 'delivery', 'heartbeat']
const MAX_DELAY_MS = 30000
const WATCHDOG_MS = 90000

export const liveStatus = ref('idle') // idle | connecting | open | reconnecting

const listeners = new Map()
let source = null
let retryTimer = null
let watchdog = null
let attempt = 0
let stopped = true
let tokenProvider = null
let sawHeartbeat = false

export function onLiveEvent(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set())
  listeners.get(type).add(fn)
  return () => listeners.get(type)?.delete(fn)
}

function emit(type, data) {
  for (const fn of listeners.get(type) ?? []) {
    try {
      fn(data)
    } catch (e) {
      console.error('live event handler failed', e)
    }
  }
}

function armWatchdog() {
  clearTimeout(watchdog)
  if (!sawHeartbeat) return
  watchdog = setTimeout(() => {
    // the server sends heartbeats: silence means a dead connection that no error reported
    closeSource()
    schedule()
  }, WATCHDOG_MS)
}

function closeSource() {
  clearTimeout(watchdog)
  if (source) {
    source.close()
    source = null
  }
}

function schedule() {
  if (stopped) return
  liveStatus.value = 'reconnecting'
  const delay = Math.min(MAX_DELAY_MS, 1000 * 2 ** attempt)
  attempt += 1
  clearTimeout(retryTimer)
  retryTimer = setTimeout(open, delay)
}

async function open() {
  if (stopped || typeof EventSource === 'undefined') return
  const reconnecting = attempt > 0
  liveStatus.value = reconnecting ? 'reconnecting' : 'connecting'
  let token
  try {
    token = await tokenProvider()
  } catch {
    token = null
  }
  if (stopped) return
  if (!token) {
    schedule()
    return
  }
  closeSource()
  const es = new EventSource(`${EVENTS_URL}?access_token=${encodeURIComponent(token)}`)
  source = es
  es.onopen = () => {
    if (source !== es) return
    attempt = 0
    liveStatus.value = 'open'
    if (reconnecting) emit('resync', {})
    armWatchdog()
  }
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (event) => {
      if (source !== es) return
      if (type === 'heartbeat') sawHeartbeat = true
      armWatchdog()
      let data = event.data
      try {
        data = JSON.parse(event.data)
      } catch {
        /* keep the raw text */
      }
      emit(type, data)
    })
  }
  es.onerror = () => {
    if (source !== es) return
    closeSource()
    schedule()
  }
}

/** Start the stream; getToken() must resolve to a currently valid access token. */
export function startLive(getToken) {
  tokenProvider = getToken
  if (!stopped) return
  stopped = false
  attempt = 0
  open()
}

export function stopLive() {
  stopped = true
  clearTimeout(retryTimer)
  closeSource()
  liveStatus.value = 'idle'
}
