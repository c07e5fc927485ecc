import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'

export const useSettingsStore = defineStore('settings', {
  state: () => ({ data: null, loading: false, error: null }),
  actions: {
    async fetch() {
      this.loading = true
      try {
        const { data } = await api.get('/settings')
        this.data = data
        this.error = null
      } catch (e) {
        this.error = errorMessage(e)
      } finally {
        this.loading = false
      }
    },
    /** PATCH only what changed; returns the saved settings. */
    async save(patch) {
      const { data } = await api.patch('/settings', patch)
      this.data = data
      return data
    },
  },
})
