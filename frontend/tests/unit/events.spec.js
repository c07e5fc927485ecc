import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { liveStatus, onLiveEvent, startLive, stopLive } from '@/api/events'

class FakeEventSource {
  static instances = []
  constructor(url) {
    this.url = url
    this.listeners = {}
    this.closed = false
    FakeEventSource.instances.push(this)
  }
  addEventListener(type, fn) {
    ;(this.listeners[type] ??= []).push(fn)
  }
  close() {
    this.closed = true
  }
  emit(type, data) {
    for (const fn of this.listeners[type] ?? []) fn({ data: JSON.stringify(data) })
  }
}

describe('live events', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    FakeEventSource.instances = []
    vi.stubGlobal('EventSource', FakeEventSource)
  })
  afterEach(() => {
    stopLive()
    vi.useRealTimers()
    vi.unstubAllGlobals()
  })

  it('connects with the token in the query string and dispatches typed events', async () => {
    const seen = []
    const off = onLiveEvent('ingest', (d) => seen.push(d))
    startLive(async () => 'tok en')
    await vi.advanceTimersByTimeAsync(0)
    const es = FakeEventSource.instances[0]
    expect(es.url).toBe('/api/v1/events?access_token=tok%20en')
    es.onopen()
    expect(liveStatus.value).toBe('open')
    es.emit('ingest', { study_id: 4, instance_id: 9 })
    expect(seen).toEqual([{ study_id: 4, instance_id: 9 }])
    off()
  })

  it('reconnects with backoff and a fresh token, then asks listeners to resync', async () => {
    let n = 0
    const resync = vi.fn()
    const off = onLiveEvent('resync', resync)
    startLive(async () => `t${++n}`)
    await vi.advanceTimersByTimeAsync(0)
    FakeEventSource.instances[0].onerror()
    expect(FakeEventSource.instances[0].closed).toBe(true)
    expect(liveStatus.value).toBe('reconnecting')
    await vi.advanceTimersByTimeAsync(999)
    expect(FakeEventSource.instances).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(FakeEventSource.instances).toHaveLength(2)
    expect(FakeEventSource.instances[1].url).toContain('access_token=t2')
    FakeEventSource.instances[1].onerror()
    await vi.advanceTimersByTimeAsync(1999)
    expect(FakeEventSource.instances).toHaveLength(2) // second delay is 2 s
    await vi.advanceTimersByTimeAsync(1)
    FakeEventSource.instances[2].onopen()
    expect(resync).toHaveBeenCalledTimes(1)
    expect(liveStatus.value).toBe('open')
    off()
  })

  it('stops cleanly', async () => {
    startLive(async () => 't')
    await vi.advanceTimersByTimeAsync(0)
    stopLive()
    expect(FakeEventSource.instances[0].closed).toBe(true)
    expect(liveStatus.value).toBe('idle')
    await vi.advanceTimersByTimeAsync(60000)
    expect(FakeEventSource.instances).toHaveLength(1)
  })
})
