import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'

export const useDashboardStore = defineStore('dashboard', {
  state: () => ({
    summary: null,
    health: null,
    loading: false,
    error: null,
    healthError: null,
    updatedAt: null,
  }),
  getters: {
    receivedLastHour: (s) => (s.summary?.received_per_minute ?? []).reduce((n, p) => n + (p.count ?? 0), 0),
    forwardedLastHour: (s) => (s.summary?.forwarded_per_minute ?? []).reduce((n, p) => n + (p.count ?? 0), 0),
  },
  actions: {
    async fetch({ silent = false } = {}) {
      if (!silent) this.loading = true
      const [summary, health] = await Promise.allSettled([api.get('/metrics/summary'), api.get('/health')])
      if (summary.status === 'fulfilled') {
        this.summary = summary.value.data
        this.error = null
      } else if (!silent || !this.summary) {
        this.error = errorMessage(summary.reason)
      }
      if (health.status === 'fulfilled') {
        this.health = health.value.data
        this.healthError = null
      } else {
        // /health answers 503 with the same body when degraded
        const body = health.reason?.response?.data
        if (body && Array.isArray(body.components)) {
          this.health = body
          this.healthError = null
        } else if (!silent || !this.health) {
          this.healthError = errorMessage(health.reason)
        }
      }
      this.updatedAt = new Date().toISOString()
      this.loading = false
    },
  },
})
