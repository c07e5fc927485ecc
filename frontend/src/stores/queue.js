import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'
import { DELIVERY_STATES } from '@/utils/states'

export const useQueueStore = defineStore('queue', {
  state: () => ({
    filters: { state: '', destination_id: '' },
    page: 1,
    pageSize: 50,
    items: [],
    total: 0,
    loading: false,
    loaded: false,
    error: null,
    seq: 0,
    counts: [],
    countsError: null,
    selected: [],
    history: { deliveryId: null, items: [], loading: false, error: null },
  }),
  getters: {
    pageCount: (s) => Math.max(1, Math.ceil(s.total / s.pageSize)),
    /** [{destination_id, destination, states: {state: n}, total}] sorted by name. */
    countsByDestination: (s) => {
      const rows = new Map()
      for (const c of s.counts) {
        const key = String(c.destination_id)
        if (!rows.has(key)) {
          rows.set(key, { destination_id: c.destination_id, destination: c.destination, states: {}, total: 0 })
        }
        const row = rows.get(key)
        row.states[c.state] = (row.states[c.state] ?? 0) + c.count
        row.total += c.count
      }
      return [...rows.values()].sort((a, b) => String(a.destination).localeCompare(String(b.destination)))
    },
    totalsByState: (s) => {
      const totals = Object.fromEntries(DELIVERY_STATES.map((st) => [st, 0]))
      for (const c of s.counts) totals[c.state] = (totals[c.state] ?? 0) + c.count
      return totals
    },
    allSelected: (s) => s.items.length > 0 && s.items.every((d) => s.selected.includes(d.id)),
  },
  actions: {
    setFilter(name, value) {
      this.filters[name] = value
      this.page = 1
      this.selected = []
    },
    params() {
      const p = { page: this.page, page_size: this.pageSize }
      if (this.filters.state) p.state = this.filters.state
      if (this.filters.destination_id !== '' && this.filters.destination_id !== null) {
        p.destination_id = this.filters.destination_id
      }
      return p
    },
    async fetch({ silent = false } = {}) {
      const seq = ++this.seq
      if (!silent) this.loading = true
      try {
        const { data } = await api.get('/queue/deliveries', { params: this.params() })
        if (seq !== this.seq) return
        this.items = data.items ?? []
        this.total = data.total ?? 0
        this.error = null
        this.loaded = true
        const visible = new Set(this.items.map((d) => d.id))
        this.selected = this.selected.filter((id) => visible.has(id))
      } catch (e) {
        if (seq !== this.seq) return
        if (!silent || !this.loaded) this.error = errorMessage(e)
      } finally {
        if (seq === this.seq) this.loading = false
      }
    },
    async fetchCounts() {
      try {
        const { data } = await api.get('/queue/counts')
        this.counts = Array.isArray(data) ? data : []
        this.countsError = null
      } catch (e) {
        this.countsError = errorMessage(e)
      }
    },
    refreshAll(options) {
      return Promise.all([this.fetch(options), this.fetchCounts()])
    },
    toggle(id) {
      this.selected = this.selected.includes(id) ? this.selected.filter((x) => x !== id) : [...this.selected, id]
    },
    toggleAll() {
      this.selected = this.allSelected ? [] : this.items.map((d) => d.id)
    },
    clearSelection() {
      this.selected = []
    },
    async retry(ids) {
      const { data } = await api.post('/queue/retry', { ids })
      this.selected = []
      await this.refreshAll({ silent: true })
      return data?.count ?? 0
    },
    async cancel(ids) {
      const { data } = await api.post('/queue/cancel', { ids })
      this.selected = []
      await this.refreshAll({ silent: true })
      return data?.count ?? 0
    },
    /** Retry every dead letter of one destination. */
    async retryDead(destinationId) {
      const { data } = await api.post('/queue/retry', { destination_id: destinationId })
      await this.refreshAll({ silent: true })
      return data?.count ?? 0
    },
    async loadHistory(deliveryId) {
      this.history = { deliveryId, items: [], loading: true, error: null }
      try {
        const { data } = await api.get(`/queue/deliveries/${deliveryId}/history`)
        if (this.history.deliveryId === deliveryId) this.history.items = data ?? []
      } catch (e) {
        if (this.history.deliveryId === deliveryId) this.history.error = errorMessage(e)
      } finally {
        if (this.history.deliveryId === deliveryId) this.history.loading = false
      }
    },
    closeHistory() {
      this.history = { deliveryId: null, items: [], loading: false, error: null }
    },
  },
})
