import { afterEach, describe, expect, it, vi } from 'vitest'
import { mount, flushPromises } from '@vue/test-utils'
import App from '@/App.vue'
import { stopLive } from '@/api/events'
import { mockApi, ok, setupApp } from './helpers'

afterEach(() => {
  stopLive()
  vi.unstubAllGlobals()
})

function apiRoutes() {
  return {
    'GET /auth/me': ok({ id: 1, username: 'alice', roles: ['admin'] }),
    'POST /auth/logout': ok(null, 204),
    'GET /studies': ok({ items: [], total: 0 }),
  }
}

describe('App', () => {
  it('renders the shell with the menu and the user, and signs out to the login page', async () => {
    vi.stubGlobal('EventSource', class { addEventListener() {} close() {} })
    const calls = mockApi(apiRoutes())
    const { global, router } = await setupApp({ path: '/studies' })
    const w = mount(App, { global, attachTo: document.body })
    await flushPromises()
    expect(w.get('[data-testid=current-user]').text()).toBe('alice')
    expect(w.find('[data-testid=main-nav]').exists()).toBe(true)
    expect(document.title).toBe('Studies · dicom-gw')
    await w.get('[data-testid=logout]').trigger('click')
    await vi.waitFor(() => expect(router.currentRoute.value.name).toBe('login'))
    expect(router.currentRoute.value.query).toEqual({})
    expect(calls.some((c) => c.url === '/auth/logout')).toBe(true)
    w.unmount()
  })

  it('returns to the login page with the expiry notice when the session is lost', async () => {
    mockApi(apiRoutes())
    const { global, router, auth } = await setupApp({ path: '/studies?modality=CT' })
    const w = mount(App, { global, attachTo: document.body })
    await flushPromises()
    auth.sessionExpired()
    await vi.waitFor(() => expect(router.currentRoute.value.name).toBe('login'))
    await flushPromises()
    expect(router.currentRoute.value.query).toEqual({ redirect: '/studies?modality=CT', expired: '1' })
    expect(w.find('[data-testid=login-expired]').exists()).toBe(true)
    w.unmount()
  })
})
