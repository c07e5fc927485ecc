import { describe, expect, it, vi } from 'vitest'
import { mount, flushPromises } from '@vue/test-utils'
import LoginView from '@/views/LoginView.vue'
import StudiesView from '@/views/StudiesView.vue'
import StudyDetailView from '@/views/StudyDetailView.vue'
import QueueView from '@/views/QueueView.vue'
import DestinationsView from '@/views/DestinationsView.vue'
import AuditView from '@/views/AuditView.vue'
import DashboardView from '@/views/DashboardView.vue'
import ConfirmDialog from '@/components/ConfirmDialog.vue'
import { useUiStore } from '@/stores/ui'
import { fail, mockApi, ok, setupApp } from './helpers'

const study = (id, extra = {}) => ({
  id,
  study_instance_uid: `1.2.3.${id}`,
  patient_name: 'DOE^JANE',
  patient_id: `P${id}`,
  study_date: '20261127',
  accession_number: `A${id}`,
  modalities: ['CT'],
  calling_ae: 'CT1',
  instance_count: 3,
  last_received_at: new Date().toISOString(),
  deliveries: { sent: 3 },
  ...extra,
})

describe('LoginView', () => {
  it('shows the lockout message of the API', async () => {
    mockApi({ 'POST /auth/login': fail(423, 'Account locked until 2026-11-28T14:05:00Z') })
    const { global } = await setupApp({ signedIn: false, path: '/login' })
    const w = mount(LoginView, { global })
    await w.get('[data-testid=login-username]').setValue('bob')
    await w.get('[data-testid=login-password]').setValue('wrong')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid=login-error]').text()).toContain('Account locked until 2026-11-28T14:05:00Z')
    expect(w.get('[data-testid=login-error]').attributes('role')).toBe('alert')
  })

  it('shows invalid credentials', async () => {
    mockApi({ 'POST /auth/login': fail(401, 'Invalid username or password') })
    const { global } = await setupApp({ signedIn: false, path: '/login' })
    const w = mount(LoginView, { global })
    await w.get('[data-testid=login-username]').setValue('bob')
    await w.get('[data-testid=login-password]').setValue('wrong')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid=login-error]').text()).toBe('Invalid username or password')
  })

  it('explains an expired session and returns to the requested page after login', async () => {
    mockApi({
      'POST /auth/login': ok({ access_token: 'a', refresh_token: 'r', expires_in: 60, token_type: 'bearer', user: { id: 1, username: 'bob', roles: ['viewer'] } }),
    })
    const { global, router } = await setupApp({ signedIn: false, path: '/login?expired=1&redirect=/queue%3Fstate%3Ddead' })
    const w = mount(LoginView, { global })
    expect(w.find('[data-testid=login-expired]').exists()).toBe(true)
    await w.get('[data-testid=login-username]').setValue('bob')
    await w.get('[data-testid=login-password]').setValue('right')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(router.currentRoute.value.fullPath).toBe('/queue?state=dead')
  })

  it('does not redirect to another origin or to a page the role forbids', async () => {
    mockApi({
      'POST /auth/login': ok({ access_token: 'a', refresh_token: 'r', expires_in: 60, user: { id: 1, username: 'bob', roles: ['viewer'] } }),
    })
    const { global, router } = await setupApp({ signedIn: false, path: '/login?redirect=//evil.example/x' })
    const w = mount(LoginView, { global })
    await w.get('[data-testid=login-username]').setValue('bob')
    await w.get('[data-testid=login-password]').setValue('right')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(router.currentRoute.value.name).toBe('dashboard')
  })
})

describe('StudiesView', () => {
  it('lists studies, sorts through the URL and refreshes', async () => {
    const calls = mockApi({ 'GET /studies': ok({ items: [study(1), study(2, { deliveries: { dead: 1 } })], total: 2, page: 1, page_size: 25 }) })
    const { global, router } = await setupApp({ roles: ['viewer'], path: '/studies' })
    const w = mount(StudiesView, { global })
    await flushPromises()
    expect(w.findAll('[data-testid=study-row]')).toHaveLength(2)
    expect(w.text()).toContain('DOE, JANE')
    expect(w.find('[data-state=dead]').exists()).toBe(true)
    await w.get('[data-testid=sort-patient_name]').trigger('click')
    await flushPromises()
    expect(router.currentRoute.value.query).toMatchObject({ sort: 'patient_name', order: 'asc' })
    expect(calls.at(-1).params).toMatchObject({ sort: 'patient_name', order: 'asc' })
  })

  it('searches with the form', async () => {
    const calls = mockApi({ 'GET /studies': ok({ items: [], total: 0 }) })
    const { global, router } = await setupApp({ path: '/studies' })
    const w = mount(StudiesView, { global })
    await flushPromises()
    expect(w.get('[data-testid=empty]').text()).toContain('No studies yet')
    await w.get('[data-testid=filter-modality]').setValue('MR')
    await w.get('[data-testid=study-search]').trigger('submit')
    await flushPromises()
    expect(router.currentRoute.value.query).toEqual({ modality: 'MR' })
    expect(calls.at(-1).params.modality).toBe('MR')
    expect(w.get('[data-testid=empty]').text()).toContain('No study matches')
  })

  it('shows an error with a retry button', async () => {
    let up = false
    mockApi({ 'GET /studies': () => (up ? ok({ items: [study(1)], total: 1 }) : fail(500)) })
    const { global } = await setupApp({ path: '/studies' })
    const w = mount(StudiesView, { global })
    await flushPromises()
    expect(w.get('[data-testid=error]').text()).toContain('500')
    up = true
    await w.get('[data-testid=error] button').trigger('click')
    await flushPromises()
    expect(w.findAll('[data-testid=study-row]')).toHaveLength(1)
  })
})

describe('StudyDetailView', () => {
  const detail = {
    ...study(7),
    series: [
      {
        id: 1,
        series_instance_uid: '1.2.3.7.1',
        modality: 'CT',
        series_number: 1,
        series_description: 'AX',
        instance_count: 1,
        instances: [
          {
            id: 70,
            sop_instance_uid: '1.2.3.7.1.1',
            instance_number: 1,
            size_bytes: 2048,
            received_at: new Date().toISOString(),
            deliveries: [{ id: 5, destination_id: 1, destination: 'PACS', state: 'dead', attempts: 10, last_error: 'refused' }],
          },
        ],
      },
    ],
    destinations: [{ destination_id: 1, destination: 'PACS', states: { dead: 1 } }],
  }

  it('shows series, instances and per-destination state; no download or replay for viewers', async () => {
    mockApi({ 'GET /studies/7': ok(detail) })
    const { global } = await setupApp({ roles: ['viewer'], path: '/studies/7' })
    const w = mount(StudyDetailView, { global, props: { id: '7' } })
    await flushPromises()
    expect(w.get('[data-testid=study-destination-row]').text()).toContain('1 dead letter')
    expect(w.get('[data-testid=instance-delivery]').text()).toContain('refused')
    expect(w.find('[data-testid=instance-download]').exists()).toBe(false)
    expect(w.find('[data-testid=replay-form]').exists()).toBe(false)
  })

  it('replays to a destination after confirmation (operator)', async () => {
    const calls = mockApi({
      'GET /studies/7': ok(detail),
      'GET /destinations': ok([{ id: 1, name: 'PACS' }]),
      'POST /studies/7/replay': ok({ queued: 3 }),
    })
    const { global } = await setupApp({ roles: ['operator'], path: '/studies/7' })
    const w = mount(StudyDetailView, { global, props: { id: '7' } })
    const dialog = mount(ConfirmDialog, { global, attachTo: document.body })
    await flushPromises()
    expect(w.find('[data-testid=instance-download]').exists()).toBe(true)
    await w.get('[data-testid=replay-destination]').setValue('1')
    await w.get('[data-testid=replay-form]').trigger('submit')
    await flushPromises()
    await dialog.get('[data-testid=confirm-ok]').trigger('click')
    await flushPromises()
    expect(calls.find((c) => c.url === '/studies/7/replay').data).toEqual({ destination_id: 1 })
    expect(useUiStore().toasts.at(-1).message).toContain('3 instances queued for PACS')
    dialog.unmount()
  })
})

describe('QueueView', () => {
  const deliveries = [1, 2, 3].map((id) => ({ id, state: 'dead', destination_id: 1, destination: 'PACS', attempts: 10, sop_instance_uid: `1.2.${id}`, study_id: 4, updated_at: new Date().toISOString() }))

  function routes() {
    return {
      'GET /queue/deliveries': ok({ items: deliveries, total: 3, page: 1, page_size: 50 }),
      'GET /queue/counts': ok([{ destination_id: 1, destination: 'PACS', state: 'dead', count: 3 }]),
      'GET /destinations': ok([{ id: 1, name: 'PACS' }]),
      'POST /queue/retry': (req) => ok({ count: req.data.ids?.length ?? 3 }),
    }
  }

  it('retries the selected deliveries after confirmation', async () => {
    const calls = mockApi(routes())
    const { global } = await setupApp({ roles: ['operator'], path: '/queue' })
    const w = mount(QueueView, { global, attachTo: document.body })
    const dialog = mount(ConfirmDialog, { global, attachTo: document.body })
    await flushPromises()
    const boxes = w.findAll('[data-testid=delivery-select]')
    await boxes[0].setValue(true)
    await boxes[2].setValue(true)
    expect(w.get('[data-testid=bulk-actions]').text()).toContain('2 selected')
    await w.get('[data-testid=bulk-retry]').trigger('click')
    await flushPromises()
    expect(dialog.get('[data-testid=confirm-message]').text()).toContain('2 selected deliveries')
    await dialog.get('[data-testid=confirm-ok]').trigger('click')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST').data).toEqual({ ids: [1, 3] })
    w.unmount()
    dialog.unmount()
  })

  it('does nothing when the confirmation is cancelled', async () => {
    const calls = mockApi(routes())
    const { global } = await setupApp({ roles: ['admin'], path: '/queue' })
    const w = mount(QueueView, { global, attachTo: document.body })
    const dialog = mount(ConfirmDialog, { global, attachTo: document.body })
    await flushPromises()
    await w.get('[data-testid=retry-dead]').trigger('click')
    await flushPromises()
    expect(dialog.get('[data-testid=confirm-message]').text()).toContain('Retry all 3 dead letters of PACS')
    await dialog.get('[data-testid=confirm-cancel]').trigger('click')
    await flushPromises()
    expect(calls.some((c) => c.method === 'POST')).toBe(false)
    w.unmount()
    dialog.unmount()
  })

  it('is read-only for viewers and filters through the URL', async () => {
    const calls = mockApi(routes())
    const { global, router } = await setupApp({ roles: ['viewer'], path: '/queue?state=dead&destination_id=1' })
    const w = mount(QueueView, { global })
    await flushPromises()
    expect(calls.find((c) => c.url === '/queue/deliveries').params).toMatchObject({ state: 'dead', destination_id: '1' })
    expect(w.find('[data-testid=delivery-select]').exists()).toBe(false)
    expect(w.find('[data-testid=retry-dead]').exists()).toBe(false)
    await w.get('[data-testid=queue-filter-state]').setValue('retry')
    await flushPromises()
    expect(router.currentRoute.value.query).toEqual({ state: 'retry', destination_id: '1' })
  })

  it('opens the history drawer', async () => {
    mockApi({ ...routes(), 'GET /queue/deliveries/2/history': ok([{ created_at: new Date().toISOString(), from_state: 'retry', to_state: 'dead', attempts: 10, reason: 'max retries' }]) })
    const { global } = await setupApp({ roles: ['viewer'], path: '/queue' })
    const w = mount(QueueView, { global, attachTo: document.body })
    await flushPromises()
    await w.findAll('[data-testid=delivery-history]')[1].trigger('click')
    await flushPromises()
    expect(w.get('[data-testid=history-drawer]').text()).toContain('max retries')
    w.unmount()
  })
})

describe('DestinationsView', () => {
  const dest = { id: 1, name: 'PACS', ae_title: 'PACS1', host: 'pacs', port: 104, mode: 'instance', enabled: true, max_retries: 5, backoff_base_seconds: 30, backoff_cap_seconds: 600 }

  it('tests a destination and shows the echo result', async () => {
    mockApi({ 'GET /destinations': ok([dest]), 'POST /destinations/1/echo': ok({ ok: false, status: 0xa700, round_trip_ms: null, detail: 'Association rejected' }) })
    const { global } = await setupApp({ roles: ['operator'], path: '/destinations' })
    const w = mount(DestinationsView, { global })
    await flushPromises()
    expect(w.find('[data-testid=destination-edit]').exists()).toBe(false)
    await w.get('[data-testid=destination-test]').trigger('click')
    await flushPromises()
    const result = w.get('[data-testid=echo-result]')
    expect(result.attributes('data-ok')).toBe('false')
    expect(result.text()).toContain('0xA700')
    expect(result.text()).toContain('Association rejected')
  })

  it('shows API field errors next to the fields of the form', async () => {
    mockApi({
      'GET /destinations': ok([]),
      'POST /destinations': fail(422, [{ loc: ['body', 'host'], msg: 'Name or address not resolvable', type: 'value_error' }]),
    })
    const { global } = await setupApp({ roles: ['admin'], path: '/destinations' })
    const w = mount(DestinationsView, { global, attachTo: document.body })
    await flushPromises()
    await w.get('[data-testid=destination-new]').trigger('click')
    await flushPromises()
    await w.get('[data-testid=dest-name]').setValue('New')
    await w.get('[data-testid=dest-ae-title]').setValue('NEWAE')
    await w.get('[data-testid=dest-host]').setValue('nowhere')
    await w.get('[data-testid=destination-form]').trigger('submit')
    await flushPromises()
    const host = w.get('[data-testid=dest-host]')
    expect(host.attributes('aria-invalid')).toBe('true')
    expect(w.get(`#${host.attributes('aria-describedby').split(' ').at(-1)}`).text()).toBe('Name or address not resolvable')
    w.unmount()
  })

  it('validates before sending', async () => {
    const calls = mockApi({ 'GET /destinations': ok([]) })
    const { global } = await setupApp({ roles: ['admin'], path: '/destinations' })
    const w = mount(DestinationsView, { global, attachTo: document.body })
    await flushPromises()
    await w.get('[data-testid=destination-new]').trigger('click')
    await flushPromises()
    await w.get('[data-testid=dest-port]').setValue('70000')
    await w.get('[data-testid=destination-form]').trigger('submit')
    await flushPromises()
    const errors = w.findAll('[data-testid=field-error]').map((e) => e.text())
    expect(errors).toEqual(expect.arrayContaining(['A name is required.', 'A port between 1 and 65535.']))
    expect(calls.some((c) => c.method === 'POST')).toBe(false)
    w.unmount()
  })
})

describe('AuditView', () => {
  it('shows a broken chain', async () => {
    mockApi({
      'GET /audit': ok({ items: [{ id: 1, created_at: new Date().toISOString(), actor: 'alice', action: 'auth.login', outcome: 'success' }], total: 1 }),
      'GET /audit/verify': ok({ ok: false, checked: 50, first_broken_id: 17, detail: 'hash mismatch' }),
    })
    const { global } = await setupApp({ roles: ['auditor'], path: '/audit' })
    const w = mount(AuditView, { global })
    await flushPromises()
    expect(w.findAll('[data-testid=audit-row]')).toHaveLength(1)
    await w.get('[data-testid=audit-verify]').trigger('click')
    await flushPromises()
    const r = w.get('[data-testid=verify-result]')
    expect(r.attributes('data-ok')).toBe('false')
    expect(r.text()).toContain('broken at entry 17')
  })
})

describe('DashboardView', () => {
  it('renders the summary and refreshes it when a live event arrives', async () => {
    const sources = []
    vi.stubGlobal(
      'EventSource',
      class {
        constructor(url) {
          this.url = url
          this.listeners = {}
          sources.push(this)
        }
        addEventListener(type, fn) {
          ;(this.listeners[type] ??= []).push(fn)
        }
        close() {}
      },
    )
    let n = 0
    mockApi({
      'GET /metrics/summary': () =>
        ok({
          received_per_minute: [{ minute: new Date().toISOString(), count: ++n }],
          forwarded_per_minute: [],
          queue: { pending: 4, dead: 1 },
          destinations: [{ id: 1, name: 'PACS', enabled: true, dead: 1, pending: 4, last_success_at: null, last_error_at: new Date().toISOString(), last_error: 'refused' }],
          disk: { used_percent: 50, watermark_percent: 90 },
        }),
      'GET /health': ok({ status: 'ok', components: [{ name: 'database', status: 'ok' }] }),
    })
    const { global } = await setupApp({ roles: ['viewer'], path: '/dashboard' })
    const chart = { props: ['title', 'points'], template: '<div data-testid="chart">{{ title }}: {{ points[0]?.count }}</div>' }
    const w = mount(DashboardView, { global: { ...global, stubs: { LineChart: chart } } })
    await flushPromises()
    expect(w.findAll('[data-testid=chart]')).toHaveLength(2)
    expect(w.get('[data-testid=chart]').text()).toBe('Received instances: 1')
    expect(w.get('[data-testid=queue-pending]').text()).toContain('4')
    expect(w.get('[data-testid=destination-health-row]').text()).toContain('Failing')
    expect(w.get('[data-testid=health-status]').text()).toBe('All OK')

    vi.useFakeTimers()
    const { startLive, stopLive } = await import('@/api/events')
    startLive(async () => 'tok')
    await vi.advanceTimersByTimeAsync(0)
    const es = sources.at(-1)
    es.onopen()
    for (const fn of es.listeners.ingest) fn({ data: '{"study_id": 1, "instance_id": 2}' })
    for (const fn of es.listeners.delivery) fn({ data: '{"destination_id": 1, "state": "sent"}' })
    await vi.advanceTimersByTimeAsync(2100)
    vi.useRealTimers()
    await flushPromises()
    expect(n).toBe(2) // two events, one debounced refresh
    expect(w.get('[data-testid=chart]').text()).toBe('Received instances: 2')
    stopLive()
    w.unmount()
    vi.unstubAllGlobals()
  })
})
