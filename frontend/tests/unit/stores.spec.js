import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { THEME_KEY, useUiStore } from '@/stores/ui'
import { useDashboardStore } from '@/stores/dashboard'
import { useDestinationsStore } from '@/stores/destinations'
import { useUsersStore } from '@/stores/users'
import { useAuditStore } from '@/stores/audit'
import { useSettingsStore } from '@/stores/settings'
import { fail, mockApi, ok } from './helpers'

function fakeMatchMedia(dark) {
  const listeners = []
  const mq = { matches: dark, addEventListener: (_, fn) => listeners.push(fn) }
  vi.stubGlobal('matchMedia', () => mq)
  window.matchMedia = () => mq
  return (value) => {
    mq.matches = value
    listeners.forEach((fn) => fn({ matches: value }))
  }
}

describe('ui store: theme', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('follows the system until the user chooses, and remembers the choice', () => {
    const setSystem = fakeMatchMedia(true)
    const ui = useUiStore()
    ui.initTheme()
    expect(ui.theme).toBe('system')
    expect(document.documentElement.classList.contains('dark')).toBe(true)
    setSystem(false)
    expect(document.documentElement.classList.contains('dark')).toBe(false)

    ui.cycleTheme() // → light
    ui.cycleTheme() // → dark
    expect(ui.theme).toBe('dark')
    expect(localStorage.getItem(THEME_KEY)).toBe('dark')
    expect(document.documentElement.classList.contains('dark')).toBe(true)

    setActivePinia(createPinia())
    const later = useUiStore()
    later.initTheme()
    expect(later.theme).toBe('dark')
    later.cycleTheme() // → system
    expect(localStorage.getItem(THEME_KEY)).toBeNull()
  })

  it('resolves confirmations', async () => {
    const ui = useUiStore()
    const answer = ui.confirm({ title: 'Sure?', message: 'Really' })
    expect(ui.confirmRequest.title).toBe('Sure?')
    ui.answerConfirm(true)
    expect(await answer).toBe(true)
    expect(ui.confirmRequest).toBeNull()
  })

  it('shows and expires notifications', () => {
    vi.useFakeTimers()
    const ui = useUiStore()
    ui.notify('Saved')
    expect(ui.toasts).toHaveLength(1)
    vi.advanceTimersByTime(6000)
    expect(ui.toasts).toHaveLength(0)
    vi.useRealTimers()
  })
})

describe('dashboard store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('loads the summary and takes health from a 503 body', async () => {
    mockApi({
      'GET /metrics/summary': ok({ received_per_minute: [{ count: 2 }, { count: 3 }], forwarded_per_minute: [{ count: 1 }], queue: {} }),
      'GET /health': { status: 503, data: { status: 'degraded', components: [{ name: 'db', status: 'error' }] } },
    })
    const store = useDashboardStore()
    await store.fetch()
    expect(store.receivedLastHour).toBe(5)
    expect(store.forwardedLastHour).toBe(1)
    expect(store.health.status).toBe('degraded')
    expect(store.healthError).toBeNull()
  })

  it('reports an unreachable API', async () => {
    mockApi({ 'GET /metrics/summary': fail(500), 'GET /health': fail(500) })
    const store = useDashboardStore()
    await store.fetch()
    expect(store.error).toMatch(/500/)
    expect(store.healthError).toMatch(/500/)
  })
})

describe('destinations store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('creates, updates, deletes and echoes', async () => {
    const calls = mockApi({
      'GET /destinations': ok([{ id: 1, name: 'B' }]),
      'POST /destinations': (req) => ok({ id: 2, ...req.data }, 201),
      'PATCH /destinations/2': (req) => ok({ id: 2, name: 'A', ...req.data }),
      'DELETE /destinations/1': ok(null, 204),
      'POST /destinations/2/echo': ok({ ok: true, status: 0, round_trip_ms: 3, detail: '' }),
    })
    const store = useDestinationsStore()
    await store.fetch()
    await store.create({ name: 'A' })
    expect(store.sorted.map((d) => d.name)).toEqual(['A', 'B'])
    await store.setEnabled({ id: 2 }, false)
    expect(calls.at(-1).data).toEqual({ enabled: false })
    expect(store.byId['2'].enabled).toBe(false)
    await store.remove(1)
    expect(store.items.map((d) => d.id)).toEqual([2])
    await store.test(2)
    expect(store.echo[2]).toMatchObject({ loading: false, result: { ok: true } })
  })

  it('keeps the echo error', async () => {
    mockApi({ 'POST /destinations/5/echo': fail(504, 'No answer within 30 s') })
    const store = useDestinationsStore()
    await store.test(5)
    expect(store.echo[5].error).toBe('No answer within 30 s')
  })
})

describe('users, audit and settings stores', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('manages users', async () => {
    const calls = mockApi({
      'GET /users': ok([{ id: 1, username: 'zed', roles: ['viewer'] }]),
      'POST /users': (req) => ok({ id: 2, ...req.data, disabled: false }, 201),
      'PATCH /users/1': (req) => ok({ id: 1, username: 'zed', roles: ['viewer'], ...req.data }),
      'POST /users/1/password': ok(null, 204),
    })
    const store = useUsersStore()
    await store.fetch()
    await store.create({ username: 'amy', password: 'longpassword', roles: ['admin'] })
    expect(store.sorted.map((u) => u.username)).toEqual(['amy', 'zed'])
    await store.update(1, { disabled: true })
    expect(store.items[0].disabled).toBe(true)
    await store.resetPassword(1, 'anotherpassword')
    expect(calls.at(-1)).toMatchObject({ url: '/users/1/password', data: { password: 'anotherpassword' } })
  })

  it('searches, verifies and exports the audit log', async () => {
    const calls = mockApi({
      'GET /audit': ok({ items: [{ id: 1 }], total: 1 }),
      'GET /audit/verify': ok({ ok: true, checked: 10, first_broken_id: null, detail: '' }),
      'GET /audit/export': ok(new Blob(['a,b\n']), 200, { 'content-disposition': 'attachment; filename="audit.csv"' }),
    })
    URL.createObjectURL = vi.fn(() => 'blob:x')
    URL.revokeObjectURL = vi.fn()
    const store = useAuditStore()
    store.filters.actor = 'alice'
    store.filters.outcome = 'failure'
    await store.fetch()
    expect(calls[0].params).toMatchObject({ actor: 'alice', outcome: 'failure', page: 1, page_size: 50 })
    await store.verify()
    expect(store.verifyResult.checked).toBe(10)
    expect(await store.exportCsv()).toBe('audit.csv')
    expect(calls.at(-1).params).toEqual({ actor: 'alice', outcome: 'failure' })
  })

  it('patches settings', async () => {
    const calls = mockApi({
      'GET /settings': ok({ retention_hours: 24, disk_watermark_percent: 90, allowed_callers: [], allow_any_caller: false }),
      'PATCH /settings': (req) => ok({ retention_hours: 24, disk_watermark_percent: 90, allowed_callers: [], allow_any_caller: false, ...req.data }),
    })
    const store = useSettingsStore()
    await store.fetch()
    await store.save({ retention_hours: 48 })
    expect(calls[1].data).toEqual({ retention_hours: 48 })
    expect(store.data.retention_hours).toBe(48)
  })
})
