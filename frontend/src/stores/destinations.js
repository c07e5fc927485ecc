import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'

export function newDestination() {
  return {
    name: '',
    ae_title: '',
    host: '',
    port: 104,
    calling_ae_title: 'DICOM_GW',
    tls_enabled: false,
    tls_ca_file: '',
    tls_cert_file: '',
    tls_key_file: '',
    max_associations: 2,
    batch_size: 100,
    max_retries: 10,
    backoff_base_seconds: 30,
    backoff_cap_seconds: 3600,
    mode: 'instance',
    study_quiet_seconds: 60,
    warning_is_success: true,
    enabled: true,
  }
}

export const useDestinationsStore = defineStore('destinations', {
  state: () => ({
    items: [],
    loading: false,
    loaded: false,
    error: null,
    echo: {}, // id -> { loading, result, error }
  }),
  getters: {
    byId: (s) => Object.fromEntries(s.items.map((d) => [String(d.id), d])),
    sorted: (s) => [...s.items].sort((a, b) => a.name.localeCompare(b.name)),
  },
  actions: {
    async fetch({ silent = false } = {}) {
      if (!silent) this.loading = true
      try {
        const { data } = await api.get('/destinations')
        this.items = Array.isArray(data) ? data : []
        this.error = null
        this.loaded = true
      } catch (e) {
        if (!silent || !this.loaded) this.error = errorMessage(e)
      } finally {
        this.loading = false
      }
    },
    /** Load once per page visit unless already there (other pages only need the names). */
    async ensureLoaded() {
      if (!this.loaded && !this.loading) await this.fetch()
    },
    async create(payload) {
      const { data } = await api.post('/destinations', payload)
      this.items.push(data)
      return data
    },
    async update(id, patch) {
      const { data } = await api.patch(`/destinations/${id}`, patch)
      const i = this.items.findIndex((d) => d.id === id)
      if (i >= 0) this.items[i] = data
      return data
    },
    async remove(id) {
      await api.delete(`/destinations/${id}`)
      this.items = this.items.filter((d) => d.id !== id)
      delete this.echo[id]
    },
    setEnabled(destination, enabled) {
      return this.update(destination.id, { enabled })
    },
    async test(id) {
      this.echo[id] = { loading: true, result: null, error: null }
      try {
        const { data } = await api.post(`/destinations/${id}/echo`, null, { timeout: 60000 })
        this.echo[id] = { loading: false, result: data, error: null }
      } catch (e) {
        this.echo[id] = { loading: false, result: null, error: errorMessage(e) }
      }
      return this.echo[id]
    },
  },
})
