import { defineStore } from 'pinia'
import { api, configureAuth, refreshOnce } from '@/api/client'
import { loadSession, saveSession, withSessionLock, SESSION_KEY } from '@/api/session'
import { can } from '@/permissions'
import { NAV_ITEMS } from '@/navigation'

// Refresh a little before the access token expires when a fresh one is needed up front (SSE).
const EARLY_REFRESH_MS = 30000
let listening = false

export const useAuthStore = defineStore('auth', {
  state: () => ({
    accessToken: null,
    refreshToken: null,
    expiresAt: 0,
    user: null,
    // why the last session ended without a logout ('expired'), shown on the login page
    endReason: null,
  }),
  getters: {
    isAuthenticated: (s) => Boolean(s.refreshToken && s.user),
    roles: (s) => s.user?.roles ?? [],
    username: (s) => s.user?.username ?? '',
  },
  actions: {
    /** Restore the session kept by an earlier page, wire the API client, follow other tabs. */
    init() {
      this.adopt(loadSession())
      configureAuth({
        getAccessToken: () => this.accessToken,
        refresh: (stale) => this.refresh(stale),
        onAuthLost: () => this.sessionExpired(),
      })
      if (typeof window !== 'undefined' && !listening) {
        listening = true
        window.addEventListener('storage', (event) => {
          if (event.key !== SESSION_KEY) return
          this.adopt(loadSession())
        })
      }
    },
    adopt(session) {
      this.accessToken = session?.accessToken ?? null
      this.refreshToken = session?.refreshToken ?? null
      this.expiresAt = session?.expiresAt ?? 0
      this.user = session?.user ?? null
    },
    persist() {
      saveSession(
        this.refreshToken
          ? {
              accessToken: this.accessToken,
              refreshToken: this.refreshToken,
              expiresAt: this.expiresAt,
              user: this.user,
            }
          : null,
      )
    },
    applyTokens(data) {
      this.accessToken = data.access_token
      this.refreshToken = data.refresh_token
      this.expiresAt = Date.now() + (Number(data.expires_in) || 0) * 1000
      if (data.user) this.user = data.user
      this.endReason = null
      this.persist()
    },
    can(capability) {
      return can(this.roles, capability)
    },
    /** The first page this user may see. */
    homeRoute() {
      const item = NAV_ITEMS.find((i) => can(this.roles, i.cap))
      return { name: item ? item.name : 'account' }
    },
    async login(username, password) {
      const { data } = await api.post('/auth/login', { username, password })
      this.applyTokens(data)
      return data.user
    },
    /**
     * Exchange the refresh token. `staleAccess` is the access token that was refused: if another tab
     * has already replaced it (the session in storage differs), use that instead of refreshing again,
     * since refresh tokens are single-use.
     */
    async refresh(staleAccess) {
      return withSessionLock(async () => {
        const stored = loadSession()
        if (stored?.accessToken && stored.accessToken !== staleAccess && stored.expiresAt > Date.now()) {
          this.adopt(stored)
          return stored.accessToken
        }
        const refreshToken = stored?.refreshToken ?? this.refreshToken
        if (!refreshToken) throw new Error('not signed in')
        try {
          const { data } = await api.post('/auth/refresh', { refresh_token: refreshToken })
          this.applyTokens(data)
          return data.access_token
        } catch (error) {
          if (error.response?.status === 401) this.sessionExpired()
          throw error
        }
      })
    },
    /** A valid access token, refreshed first if it is about to expire (for the event stream). */
    async ensureFreshToken() {
      if (!this.refreshToken) return null
      if (this.accessToken && this.expiresAt - Date.now() > EARLY_REFRESH_MS) return this.accessToken
      return refreshOnce(this.accessToken)
    },
    async fetchMe() {
      const { data } = await api.get('/auth/me')
      this.user = { ...this.user, ...data }
      this.persist()
      return this.user
    },
    async changePassword(currentPassword, newPassword) {
      await api.post('/auth/password', { current_password: currentPassword, new_password: newPassword })
    },
    async logout() {
      const refreshToken = this.refreshToken
      this.clear()
      if (refreshToken) {
        try {
          await api.post('/auth/logout', { refresh_token: refreshToken })
        } catch {
          /* the session is gone locally either way */
        }
      }
    },
    sessionExpired() {
      if (!this.refreshToken && !this.user) return
      this.clear()
      this.endReason = 'expired'
    },
    clear() {
      this.accessToken = null
      this.refreshToken = null
      this.expiresAt = 0
      this.user = null
      this.persist()
    },
  },
})
