import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useQueueStore } from '@/stores/queue'
import { mockApi, ok } from './helpers'

const item = (id, state = 'dead') => ({ id, state, destination_id: 1, destination: 'PACS' })

describe('queue store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('groups counts by destination and totals them by state', async () => {
    mockApi({
      'GET /queue/counts': ok([
        { destination_id: 2, destination: 'Zeta', state: 'dead', count: 2 },
        { destination_id: 1, destination: 'Alpha', state: 'sent', count: 10 },
        { destination_id: 1, destination: 'Alpha', state: 'dead', count: 1 },
      ]),
    })
    const store = useQueueStore()
    await store.fetchCounts()
    expect(store.countsByDestination.map((r) => r.destination)).toEqual(['Alpha', 'Zeta'])
    expect(store.countsByDestination[0]).toMatchObject({ states: { sent: 10, dead: 1 }, total: 11 })
    expect(store.totalsByState.dead).toBe(3)
  })

  it('passes filters and drops selected rows that are no longer listed', async () => {
    let items = [item(1), item(2), item(3)]
    const calls = mockApi({ 'GET /queue/deliveries': () => ok({ items, total: items.length }) })
    const store = useQueueStore()
    store.setFilter('state', 'dead')
    store.setFilter('destination_id', '4')
    await store.fetch()
    expect(calls[0].params).toEqual({ state: 'dead', destination_id: '4', page: 1, page_size: 50 })
    store.toggleAll()
    expect(store.selected).toEqual([1, 2, 3])
    items = [item(2)]
    await store.fetch({ silent: true })
    expect(store.selected).toEqual([2])
  })

  it('retries and cancels selected deliveries, then reloads', async () => {
    const calls = mockApi({
      'POST /queue/retry': ok({ count: 2 }),
      'POST /queue/cancel': ok({ count: 1 }),
      'GET /queue/deliveries': ok({ items: [], total: 0 }),
      'GET /queue/counts': ok([]),
    })
    const store = useQueueStore()
    store.selected = [1, 2]
    expect(await store.retry([1, 2])).toBe(2)
    expect(store.selected).toEqual([])
    expect(await store.cancel([3])).toBe(1)
    expect(calls.filter((c) => c.method === 'POST').map((c) => c.data)).toEqual([{ ids: [1, 2] }, { ids: [3] }])
    expect(calls.some((c) => c.url === '/queue/counts')).toBe(true)
  })

  it('retries all dead letters of one destination', async () => {
    const calls = mockApi({
      'POST /queue/retry': ok({ count: 7 }),
      'GET /queue/deliveries': ok({ items: [], total: 0 }),
      'GET /queue/counts': ok([]),
    })
    expect(await useQueueStore().retryDead(3)).toBe(7)
    expect(calls[0].data).toEqual({ destination_id: 3 })
  })

  it('loads the history of a delivery', async () => {
    mockApi({ 'GET /queue/deliveries/9/history': ok([{ to_state: 'pending' }, { from_state: 'pending', to_state: 'dead' }]) })
    const store = useQueueStore()
    await store.loadHistory(9)
    expect(store.history).toMatchObject({ deliveryId: 9, loading: false, error: null })
    expect(store.history.items).toHaveLength(2)
  })
})
