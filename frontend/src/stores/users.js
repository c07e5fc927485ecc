import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'

export const useUsersStore = defineStore('users', {
  state: () => ({ items: [], loading: false, loaded: false, error: null }),
  getters: {
    sorted: (s) => [...s.items].sort((a, b) => a.username.localeCompare(b.username)),
  },
  actions: {
    async fetch({ silent = false } = {}) {
      if (!silent) this.loading = true
      try {
        const { data } = await api.get('/users')
        this.items = Array.isArray(data) ? data : []
        this.error = null
        this.loaded = true
      } catch (e) {
        if (!silent || !this.loaded) this.error = errorMessage(e)
      } finally {
        this.loading = false
      }
    },
    async create({ username, password, roles }) {
      const { data } = await api.post('/users', { username, password, roles })
      if (data?.id !== undefined) this.items.push(data)
      else await this.fetch({ silent: true })
      return data
    },
    async update(id, patch) {
      const { data } = await api.patch(`/users/${id}`, patch)
      const i = this.items.findIndex((u) => u.id === id)
      if (i >= 0) this.items[i] = data?.id !== undefined ? data : { ...this.items[i], ...patch }
      return this.items[i]
    },
    async resetPassword(id, password) {
      await api.post(`/users/${id}/password`, { password })
    },
  },
})
