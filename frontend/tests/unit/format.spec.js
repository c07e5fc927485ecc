import { describe, expect, it, vi } from 'vitest'
import { debounce } from '@/utils/debounce'
import { formatBytes, formatDicomDate, formatPatientName, formatRelative, shortUid, withLocalTime } from '@/utils/format'
import { filenameFromDisposition } from '@/utils/download'
import { nonZeroStates } from '@/utils/states'

describe('formatting', () => {
  it('formats DICOM values', () => {
    expect(formatPatientName('DOE^JANE^Q')).toBe('DOE, JANE Q')
    expect(formatPatientName('DOE')).toBe('DOE')
    expect(formatPatientName('')).toBe('—')
    expect(formatDicomDate('20261127')).toBe('2026-11-27')
    expect(formatDicomDate('2026-11-27')).toBe('2026-11-27')
    expect(shortUid('1.2.3')).toBe('1.2.3')
    expect(shortUid('1.2.826.0.1.3680043.8.498.1', 6)).toBe('….498.1')
  })

  it('formats sizes and relative times', () => {
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1536)).toBe('1.5 KiB')
    const now = Date.parse('2026-11-27T12:00:00Z')
    expect(formatRelative('2026-11-27T11:55:00Z', now)).toBe('5 min ago')
    expect(formatRelative('2026-11-27T12:00:10Z', now)).toBe('in a few seconds')
    expect(formatRelative('2026-11-27T15:00:00Z', now)).toBe('in 3 h')
  })

  it('adds the local time to a lockout message', () => {
    expect(withLocalTime('Account locked until 2026-11-28T14:05:00Z')).toMatch(/^Account locked until 2026-11-28T14:05:00Z \(.+ local time\)$/)
    expect(withLocalTime('Invalid username or password')).toBe('Invalid username or password')
  })

  it('reads file names and state counts', () => {
    expect(filenameFromDisposition('attachment; filename="a b.csv"', 'x')).toBe('a b.csv')
    expect(filenameFromDisposition("attachment; filename*=UTF-8''%C3%A9.dcm", 'x')).toBe('é.dcm')
    expect(filenameFromDisposition(undefined, 'x')).toBe('x')
    expect(nonZeroStates({ sent: 3, dead: 1, pending: 0, weird: 2 })).toEqual([['dead', 1], ['sent', 3], ['weird', 2]])
  })
})

describe('debounce', () => {
  it('waits for quiet, but not forever with maxWait', () => {
    vi.useFakeTimers()
    const fn = vi.fn()
    const plain = debounce(fn, 100)
    plain(1)
    plain(2)
    vi.advanceTimersByTime(100)
    expect(fn.mock.calls).toEqual([[2]])

    fn.mockClear()
    const capped = debounce(fn, 100, { maxWait: 250 })
    for (let t = 0; t < 1000; t += 50) {
      capped(t)
      vi.advanceTimersByTime(50)
    }
    expect(fn.mock.calls.length).toBeGreaterThanOrEqual(3) // ~every 250 ms despite a call every 50 ms
    capped.cancel()
    vi.useRealTimers()
  })
})
