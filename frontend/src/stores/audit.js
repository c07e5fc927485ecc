import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'
import { localInputToIso } from '@/utils/format'
import { saveResponse } from '@/utils/download'

const emptyFilters = () => ({ q: '', actor: '', action: '', outcome: '', from: '', to: '' })

export const useAuditStore = defineStore('audit', {
  state: () => ({
    filters: emptyFilters(),
    page: 1,
    pageSize: 50,
    items: [],
    total: 0,
    loading: false,
    loaded: false,
    error: null,
    seq: 0,
    exporting: false,
    exportError: null,
    verifying: false,
    verifyResult: null,
    verifyError: null,
  }),
  getters: {
    pageCount: (s) => Math.max(1, Math.ceil(s.total / s.pageSize)),
  },
  actions: {
    resetFilters() {
      this.filters = emptyFilters()
      this.page = 1
    },
    filterParams() {
      const p = {}
      for (const [k, v] of Object.entries(this.filters)) {
        const value = typeof v === 'string' ? v.trim() : v
        if (value) p[k] = k === 'from' || k === 'to' ? localInputToIso(value) : value
      }
      return p
    },
    async fetch() {
      const seq = ++this.seq
      this.loading = true
      try {
        const { data } = await api.get('/audit', {
          params: { ...this.filterParams(), page: this.page, page_size: this.pageSize },
        })
        if (seq !== this.seq) return
        this.items = data.items ?? []
        this.total = data.total ?? 0
        this.error = null
        this.loaded = true
      } catch (e) {
        if (seq === this.seq) this.error = errorMessage(e)
      } finally {
        if (seq === this.seq) this.loading = false
      }
    },
    async exportCsv() {
      this.exporting = true
      this.exportError = null
      try {
        const response = await api.get('/audit/export', {
          params: this.filterParams(),
          responseType: 'blob',
          timeout: 0,
        })
        const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-')
        return saveResponse(response, `audit-${stamp}.csv`)
      } catch (e) {
        this.exportError = errorMessage(e)
        return null
      } finally {
        this.exporting = false
      }
    },
    async verify() {
      this.verifying = true
      this.verifyResult = null
      this.verifyError = null
      try {
        const { data } = await api.get('/audit/verify', { timeout: 0 })
        this.verifyResult = data
      } catch (e) {
        this.verifyError = errorMessage(e)
      } finally {
        this.verifying = false
      }
    },
  },
})
