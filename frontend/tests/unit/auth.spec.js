import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { api } from '@/api/client'
import { SESSION_KEY } from '@/api/session'
import { useAuthStore } from '@/stores/auth'
import { fail, mockApi, ok } from './helpers'

const tokens = (n, roles = ['viewer']) => ({
  access_token: `access-${n}`,
  token_type: 'bearer',
  expires_in: 900,
  refresh_token: `refresh-${n}`,
  user: { id: 7, username: 'bob', roles },
})

describe('auth store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('logs in, keeps the session in localStorage and restores it', async () => {
    const calls = mockApi({ 'POST /auth/login': ok(tokens(1)) })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    expect(calls[0].data).toEqual({ username: 'bob', password: 'secret' })
    expect(auth.isAuthenticated).toBe(true)
    expect(auth.roles).toEqual(['viewer'])
    expect(JSON.parse(localStorage.getItem(SESSION_KEY)).refreshToken).toBe('refresh-1')

    setActivePinia(createPinia())
    const again = useAuthStore()
    again.init()
    expect(again.isAuthenticated).toBe(true)
    expect(again.accessToken).toBe('access-1')
  })

  it('surfaces the lockout message', async () => {
    mockApi({ 'POST /auth/login': fail(423, 'Account locked until 2026-11-28T14:05:00Z') })
    const auth = useAuthStore()
    auth.init()
    await expect(auth.login('bob', 'x')).rejects.toMatchObject({ response: { status: 423 } })
    expect(auth.isAuthenticated).toBe(false)
  })

  it('refreshes with the stored refresh token and rotates it', async () => {
    const calls = mockApi({ 'POST /auth/login': ok(tokens(1)), 'POST /auth/refresh': ok(tokens(2)) })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    const token = await auth.refresh('access-1')
    expect(token).toBe('access-2')
    expect(calls[1].data).toEqual({ refresh_token: 'refresh-1' })
    expect(auth.refreshToken).toBe('refresh-2')
  })

  it('adopts a token another tab already refreshed instead of reusing the refresh token', async () => {
    const calls = mockApi({ 'POST /auth/login': ok(tokens(1)) })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    localStorage.setItem(
      SESSION_KEY,
      JSON.stringify({ accessToken: 'access-9', refreshToken: 'refresh-9', expiresAt: Date.now() + 60000, user: auth.user }),
    )
    expect(await auth.refresh('access-1')).toBe('access-9')
    expect(calls).toHaveLength(1)
    expect(auth.refreshToken).toBe('refresh-9')
  })

  it('ends the session when the refresh token is refused', async () => {
    mockApi({ 'POST /auth/login': ok(tokens(1)), 'POST /auth/refresh': fail(401, 'Refresh token reused') })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    await expect(auth.refresh('access-1')).rejects.toBeTruthy()
    expect(auth.isAuthenticated).toBe(false)
    expect(auth.endReason).toBe('expired')
    expect(localStorage.getItem(SESSION_KEY)).toBeNull()
  })

  it('silently refreshes an expired access token through the API client', async () => {
    let refreshed = 0
    mockApi({
      'POST /auth/login': ok(tokens(1)),
      'POST /auth/refresh': () => (refreshed++, ok(tokens(2))),
      'GET /auth/me': (req) => (req.authorization === 'Bearer access-2' ? ok({ id: 7, username: 'bob', roles: ['viewer'] }) : fail(401)),
    })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    const { data } = await api.get('/auth/me')
    expect(data.username).toBe('bob')
    expect(refreshed).toBe(1)
  })

  it('logs out: tells the API and forgets the session', async () => {
    const calls = mockApi({ 'POST /auth/login': ok(tokens(1)), 'POST /auth/logout': ok(null, 204) })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    await auth.logout()
    expect(calls[1]).toMatchObject({ url: '/auth/logout', data: { refresh_token: 'refresh-1' } })
    expect(auth.isAuthenticated).toBe(false)
    expect(auth.endReason).toBeNull()
  })

  it('chooses a start page by role', () => {
    const auth = useAuthStore()
    auth.user = { roles: ['auditor'] }
    expect(auth.homeRoute()).toEqual({ name: 'audit' })
    auth.user = { roles: ['viewer'] }
    expect(auth.homeRoute()).toEqual({ name: 'dashboard' })
    auth.user = { roles: [] }
    expect(auth.homeRoute()).toEqual({ name: 'account' })
  })

  it('ensureFreshToken refreshes only when the token is about to expire', async () => {
    let refreshed = 0
    mockApi({ 'POST /auth/login': ok(tokens(1)), 'POST /auth/refresh': () => (refreshed++, ok(tokens(2))) })
    const auth = useAuthStore()
    auth.init()
    await auth.login('bob', 'secret')
    expect(await auth.ensureFreshToken()).toBe('access-1')
    auth.expiresAt = Date.now() + 1000
    expect(await auth.ensureFreshToken()).toBe('access-2')
    expect(refreshed).toBe(1)
  })
})
