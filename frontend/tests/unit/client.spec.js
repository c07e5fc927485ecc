import { describe, expect, it, vi } from 'vitest'
import { api, configureAuth, isAuthEndpoint } from '@/api/client'
import { fail, mockApi, ok } from './helpers'

function authHooks(initial = 'old') {
  const state = { token: initial }
  const hooks = {
    getAccessToken: () => state.token,
    refresh: vi.fn(async () => {
      await new Promise((r) => setTimeout(r, 5))
      state.token = 'new'
      return 'new'
    }),
    onAuthLost: vi.fn(),
  }
  configureAuth(hooks)
  return { state, hooks }
}

describe('api client', () => {
  it('attaches the access token, but not to login/refresh', async () => {
    authHooks('tok')
    const calls = mockApi({ 'GET /studies': ok({}), 'POST /auth/login': ok({}) })
    await api.get('/studies')
    await api.post('/auth/login', {})
    expect(calls[0].authorization).toBe('Bearer tok')
    expect(calls[1].authorization).toBeNull()
  })

  it('refreshes once on 401 and replays the request', async () => {
    const { hooks } = authHooks()
    const calls = mockApi({
      'GET /studies': (req) => (req.authorization === 'Bearer new' ? ok({ items: [1] }) : fail(401, 'expired')),
    })
    const { data } = await api.get('/studies')
    expect(data.items).toEqual([1])
    expect(hooks.refresh).toHaveBeenCalledTimes(1)
    expect(calls.map((c) => c.authorization)).toEqual(['Bearer old', 'Bearer new'])
  })

  it('shares one refresh between concurrent requests', async () => {
    const { hooks } = authHooks()
    mockApi({
      'GET /a': (req) => (req.authorization === 'Bearer new' ? ok('a') : fail(401)),
      'GET /b': (req) => (req.authorization === 'Bearer new' ? ok('b') : fail(401)),
      'GET /c': (req) => (req.authorization === 'Bearer new' ? ok('c') : fail(401)),
    })
    const results = await Promise.all([api.get('/a'), api.get('/b'), api.get('/c')])
    expect(results.map((r) => r.data)).toEqual(['a', 'b', 'c'])
    expect(hooks.refresh).toHaveBeenCalledTimes(1)
  })

  it('gives up when the refresh fails and reports the lost session', async () => {
    const { hooks } = authHooks()
    hooks.refresh.mockRejectedValueOnce(new Error('refresh refused'))
    mockApi({ 'GET /studies': fail(401, 'expired') })
    await expect(api.get('/studies')).rejects.toMatchObject({ response: { status: 401 } })
    expect(hooks.onAuthLost).toHaveBeenCalledTimes(1)
  })

  it('does not loop when the replayed request is refused again', async () => {
    const { hooks } = authHooks()
    const calls = mockApi({ 'GET /studies': fail(401) })
    await expect(api.get('/studies')).rejects.toBeTruthy()
    expect(hooks.refresh).toHaveBeenCalledTimes(1)
    expect(calls).toHaveLength(2)
  })

  it('never refreshes for a failed login', async () => {
    const { hooks } = authHooks(null)
    mockApi({ 'POST /auth/login': fail(401, 'Invalid username or password') })
    await expect(api.post('/auth/login', {})).rejects.toBeTruthy()
    expect(hooks.refresh).not.toHaveBeenCalled()
  })

  it('recognises the auth endpoints', () => {
    expect(isAuthEndpoint('/auth/refresh')).toBe(true)
    expect(isAuthEndpoint('/auth/logout?x=1')).toBe(true)
    expect(isAuthEndpoint('/auth/me')).toBe(false)
  })
})
