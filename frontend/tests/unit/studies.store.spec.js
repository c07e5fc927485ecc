import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useStudiesStore } from '@/stores/studies'
import { fail, mockApi, ok, tick } from './helpers'

describe('studies store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('sends only the filters that are set, with sort and paging', async () => {
    const calls = mockApi({ 'GET /studies': ok({ items: [{ id: 1 }], total: 1, page: 1, page_size: 25 }) })
    const store = useStudiesStore()
    store.filters.patient_name = ' DOE* '
    store.filters.received_from = '2026-11-27T08:30'
    await store.fetch()
    const p = calls[0].params
    expect(p.patient_name).toBe('DOE*')
    expect(p.received_from).toBe(new Date('2026-11-27T08:30').toISOString())
    expect(p).not.toHaveProperty('modality')
    expect(p).toMatchObject({ sort: 'last_received_at', order: 'desc', page: 1, page_size: 25 })
    expect(store.items).toEqual([{ id: 1 }])
  })

  it('round-trips its state through the route query', () => {
    const store = useStudiesStore()
    store.fromQuery({ modality: 'CT', sort: 'patient_name', order: 'asc', page: '3', page_size: '50', bogus: 'x' })
    expect(store.filters.modality).toBe('CT')
    expect(store.toQuery()).toEqual({ modality: 'CT', sort: 'patient_name', order: 'asc', page: '3', page_size: '50' })
    store.fromQuery({ sort: 'drop table', page: '-4' })
    expect(store.sort).toBe('last_received_at')
    expect(store.page).toBe(1)
  })

  it('flips the order when sorting by the same column again', () => {
    const store = useStudiesStore()
    store.page = 4
    store.sortBy('study_date')
    expect([store.sort, store.order, store.page]).toEqual(['study_date', 'desc', 1])
    store.sortBy('study_date')
    expect(store.order).toBe('asc')
    store.sortBy('patient_name')
    expect(store.order).toBe('asc')
  })

  it('ignores a slow answer that a newer request overtook', async () => {
    mockApi({
      'GET /studies': async (req) => {
        if (req.params.patient_name === 'OLD') await tick(20)
        return ok({ items: [{ id: req.params.patient_name }], total: 1 })
      },
    })
    const store = useStudiesStore()
    store.filters.patient_name = 'OLD'
    const first = store.fetch()
    store.filters.patient_name = 'NEW'
    await store.fetch()
    await first
    expect(store.items).toEqual([{ id: 'NEW' }])
  })

  it('keeps the table when a silent (live) refresh fails', async () => {
    let down = false
    mockApi({ 'GET /studies': () => (down ? fail(503) : ok({ items: [{ id: 1 }], total: 1 })) })
    const store = useStudiesStore()
    await store.fetch()
    down = true
    await store.fetch({ silent: true })
    expect(store.items).toEqual([{ id: 1 }])
    expect(store.error).toBeNull()
    await store.fetch()
    expect(store.error).toMatch(/503/)
  })

  it('replays a study to a destination', async () => {
    const calls = mockApi({ 'POST /studies/5/replay': ok({ queued: 12 }) })
    expect(await useStudiesStore().replay(5, 2)).toBe(12)
    expect(calls[0].data).toEqual({ destination_id: 2 })
  })
})
